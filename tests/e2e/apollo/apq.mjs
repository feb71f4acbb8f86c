// A real Apollo Client (with its automatic persisted queries link, hashes sent over GET)
// asks cinerec for one movie twice, through two clients that share nothing. It prints, as
// JSON, what each query returned and every HTTP request the link made.
import { createHash } from "node:crypto";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client/core/index.js";
import { createPersistedQueryLink } from "@apollo/client/link/persisted-queries/index.js";

const url = process.argv[2];
const movieId = Number(process.argv[3] ?? 1);
const requests = [];

async function loggingFetch(input, init = {}) {
  const response = await fetch(input, init);
  const target = new URL(typeof input === "string" ? input : input.url);
  requests.push({
    method: init.method ?? "GET",
    sentQuery: target.searchParams.has("query") || String(init.body ?? "").includes('"query"'),
    status: response.status,
    cacheControl: response.headers.get("cache-control"),
  });
  return response;
}

function client() {
  const sha256 = (text) => createHash("sha256").update(text).digest("hex");
  const persisted = createPersistedQueryLink({ sha256, useGETForHashedQueries: true });
  return new ApolloClient({
    link: persisted.concat(new HttpLink({ uri: `${url}/graphql`, fetch: loggingFetch })),
    cache: new InMemoryCache(),
  });
}

const MOVIE = gql`
  query ApolloMovie($id: Int!) {
    movie(movieId: $id) { movieId title year }
  }
`;

const runs = [];
for (const round of [1, 2]) {
  const before = requests.length;
  const { data } = await client().query({ query: MOVIE, variables: { id: movieId }, fetchPolicy: "network-only" });
  runs.push({ round, movie: data.movie, requests: requests.slice(before) });
}
console.log(JSON.stringify(runs));
