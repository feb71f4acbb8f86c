// cinerec's reference web client. urql sends every query as a persisted query (a hash first,
// over GET, the text only when the server does not know it); graphql-ws streams explanations.
// No request leaves for any host but the server that served the page.
import { Client, fetchExchange, subscriptionExchange } from "@urql/core";
import { persistedExchange } from "@urql/exchange-persisted";
import { createClient as createSocket } from "graphql-ws";

const TOKEN_KEY = "cinerec.token";
const STREAMED_PER_PAGE = 4;
const ONBOARDING_RATINGS = 5; // a new account is shown how far it is from rows of its own // explanations streamed at once on the home page; the rest on demand
// The server's word (app/serving/llm_holder.NOT_READY) while the tuned model is still training.
const NOT_READY = "explanations are written by the template until the tuned model is ready";

const Q = {
  logout: `mutation Logout { logout }`,
  login: `mutation Login($email: String!, $password: String!) { login(email: $email, password: $password) { token } }`,
  register: `mutation Register($email: String!, $password: String!) { register(email: $email, password: $password) { token } }`,
  home: `query Home($u: Int!) { homePage(userId: $u) { rows { title kind items(first: 6) { id rank movie { movieId title year genres } evidence { reason weight kind } } } } user(userId: $u) { ratingsCount } }`,
  rate: `mutation Rate($m: Int!, $r: Float!) { rateMovie(movieId: $m, rating: $r) { rating } }`,
  dismiss: `mutation Dismiss($m: Int!) { dismissMovie(movieId: $m) }`,
  click: `mutation Click($id: ID!) { recordClick(recommendationId: $id) }`,
  search: `query Search($q: String!) { searchMovies(query: $q, first: 10) { score movie { movieId title year genres } } }`,
  why: `query Why { me { recommendations(first: 50) { rank movie { movieId } evidence { reason weight kind } } } }`,
  movie: `query Movie($m: Int!) { movie(movieId: $m) { movieId title year genres tags(first: 8) ratingsCount averageRating imdbId tmdbId myRating } similarMovies(movieId: $m, first: 8) { movieId title year genres } }`,
  versions: `query Versions { modelVersions { version aliases createdAt metrics { name value } } }`,
  promote: `mutation Promote($v: String!) { promoteModel(version: $v) { version aliases } }`,
  rollback: `mutation Rollback { rollbackModel { version aliases } }`,
  experiment: `query Experiment($n: String!) { experiment(name: $n) { name active arms { alias version users impressions hits hitRate hitRateLow hitRateHigh clicks clickThroughRate } difference differenceLow differenceHigh } }`,
  drift: `query Drift { drift { generatedAt modelVersion datasetDrift driftShare threshold } }`,
  mine: `query Mine($u: Int!) { user(userId: $u) { ratings(first: 50) { totalCount edges { node { rating ratedAt movie { movieId title year genres } } } } dismissedMovies(first: 50) { movieId title year genres } } }`,
  unrate: `mutation Unrate($m: Int!) { deleteRating(movieId: $m) { movieId } }`,
  undismiss: `mutation Undismiss($m: Int!) { undismissMovie(movieId: $m) }`,
  exportMine: `query ExportMine { exportMyData }`,
  audit: `query Audit { auditLog(first: 20) { edges { node { id at actor action arguments client result } } } apiKeys { name scope prefix createdBy createdAt revokedAt } }`,
  createKey: `mutation CreateKey($n: String!, $s: ApiKeyScope!) { createApiKey(name: $n, scope: $s) { key apiKey { name } } }`,
  revokeKey: `mutation RevokeKey($n: String!) { revokeApiKey(name: $n) { name } }`,
  erase: `mutation Erase($p: String!) { deleteMyAccount(password: $p) }`,
  explanation: `subscription Explain($u: Int!, $m: Int!) { explanation(userId: $u, movieId: $m) { text done source error } }`,
};

// -- the session ----------------------------------------------------------------------------

let token = localStorage.getItem(TOKEN_KEY);
let notice = null; // what the sign-in page says first (after a sign-out)
const claims = () => (token ? JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))) : null);
let socket = null;
let client = connect();

function connect() {
  if (socket) socket.dispose();
  socket = createSocket({
    url: `${location.origin.replace(/^http/, "ws")}/graphql`,
    lazy: true,
    connectionParams: () => (token ? { authorization: `Bearer ${token}` } : {}),
  });
  return new Client({
    url: "/graphql",
    requestPolicy: "network-only",
    fetchOptions: () => ({ headers: token ? { authorization: `Bearer ${token}` } : {} }),
    exchanges: [
      persistedExchange({ preferGetForPersistedQueries: true }),
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: socket.subscribe({ ...request, query: request.query || "" }, sink) }),
        }),
      }),
    ],
  });
}

function signIn(newToken) {
  token = newToken;
  explained.clear();
  if (token) notice = null;
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  if (!token) document.getElementById("search-box").value = ""; // the next account's box is empty
  client = connect();
  renderAccount();
}

async function run(kind, query, variables = {}) {
  const op = kind === "mutation" ? client.mutation(query, variables) : client.query(query, variables);
  const result = await op.toPromise();
  if (result.error) {
    const first = result.error.graphQLErrors[0];
    if (first?.extensions?.code === "UNAUTHENTICATED" && token) sessionEnded();
    throw new Error(first ? first.message : result.error.message);
  }
  return result.data;
}

// The token stopped working (signed out elsewhere, expired, the account gone): to sign-in,
// saying why, from whatever view the user was on. Nothing they typed is lost: the view and the
// text of its fields (and the search box) are kept for this tab, and put back when the same
// account signs in again.
const RESUME_KEY = "cinerec.resume";
function sessionEnded() {
  const typed = {};
  for (const field of document.querySelectorAll("#search-box, main input[id]:not([type=password])")) {
    if (field.value) typed[field.id] = field.value;
  }
  const who = claims()?.sub ?? null;
  sessionStorage.setItem(RESUME_KEY, JSON.stringify({ who, hash: location.hash || "#/", typed }));
  notice = "Your session has ended (signed out, expired or removed): sign in again.";
  signIn(null);
  if (location.hash === "#/signin") route();
  else location.hash = "#/signin";
}

// After a sign-in: the view the session ended on, with what was typed in it (the same account
// only), else the home page.
async function resume() {
  const kept = JSON.parse(sessionStorage.getItem(RESUME_KEY) || "null");
  sessionStorage.removeItem(RESUME_KEY);
  const same = kept && kept.who === (claims()?.sub ?? null) && kept.hash !== "#/signin";
  const target = same ? kept.hash : "#/";
  if (location.hash === target) await route();
  else {
    location.hash = target; // hashchange routes; wait for the view before filling it in
    await new Promise((done) => window.addEventListener("hashchange", () => setTimeout(done), { once: true }));
    await rendered;
  }
  if (!same) return;
  for (const [id, value] of Object.entries(kept.typed)) {
    const field = document.getElementById(id);
    if (field) field.value = value;
  }
}

// A button's action: its error is shown at the top of the view, never swallowed (after a lost
// session the sign-in page says why instead).
function act(fn) {
  return async (event) => {
    try {
      await fn(event);
    } catch (e) {
      if (token) view.prepend(problem(e));
    }
  };
}

// -- building the page ----------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false && value != null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) if (child != null) node.append(child);
  return node;
}

const view = document.getElementById("view");
function show(...nodes) {
  view.replaceChildren(...nodes.filter((n) => n != null));
}
function problem(error) {
  return h("p", { class: "error", role: "alert" }, String(error.message || error));
}
// A catalog title as a person writes it, and as the explanations name it: the article in front
// and an alternative title dropped ("Time to Kill, A" -> "A Time to Kill"; app display_title).
const ARTICLE_LAST = /^(.*), (The|A|An|La|Le|Les|Il|El|Die|Der|Das|L')$/;
const display = (title) => {
  const main = title.includes(" (") ? title.slice(0, title.indexOf(" (")) : title;
  const moved = ARTICLE_LAST.exec(main);
  return moved ? `${moved[2]} ${moved[1]}` : main;
};
const label = (movie) => (movie.year ? `${display(movie.title)} (${movie.year})` : display(movie.title));
const movieLink = (movie) => h("a", { href: `#/movie/${movie.movieId}` }, label(movie));

function renderAccount() {
  const nav = document.getElementById("account");
  const me = claims();
  document.getElementById("search").hidden = !me;
  if (!me) {
    nav.replaceChildren();
    return;
  }
  nav.replaceChildren(
    ...[
      h("a", { href: "#/" }, "Home"),
      me.uid != null ? h("a", { href: "#/mine" }, "Your lists") : null,
      me.role === "admin" ? h("a", { href: "#/admin" }, "Admin") : null,
    ].filter(Boolean),
    h("button", { type: "button", onclick: signOut }, "Sign out"),
  );
}

// Signing out revokes the token on the server (every replica refuses it from then on), then
// forgets it here; the sign-in page says which of the two happened.
async function signOut() {
  sessionStorage.removeItem(RESUME_KEY); // signing out on purpose: the next sign-in starts at home
  // this device forgets the token at once, before the server answers: a tab closed or moved on
  // in the meantime does not come back signed in
  localStorage.removeItem(TOKEN_KEY);
  try {
    await run("mutation", Q.logout);
    notice = "Signed out: this session's token no longer works anywhere.";
  } catch (e) {
    notice = `Signed out on this device; the server could not be told (${e.message}).`;
  }
  signIn(null);
  if (location.hash === "#/signin") route();
  else location.hash = "#/signin";
}

// -- sign in --------------------------------------------------------------------------------

function signInView() {
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("label", { for: "email" }, "Email"),
    h("input", { id: "email", name: "email", type: "email", required: true, autocomplete: "username", value: "demo@cinerec.local" }),
    h("label", { for: "password" }, "Password"),
    h("input", { id: "password", name: "password", type: "password", required: true, autocomplete: "current-password" }),
    notice ? h("p", { class: "notice", role: "status" }, notice) : null,
    h("p", { class: "hint" }, "The demo account: demo@cinerec.local, password demo-password."),
    h("div", { class: "actions" },
      h("button", { type: "submit", name: "action", value: "login" }, "Sign in"),
      h("button", { type: "submit", name: "action", value: "register", class: "secondary" }, "Create an account")),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter?.value || "login";
    const data = new FormData(form);
    try {
      const answer = await run("mutation", Q[action], { email: data.get("email"), password: data.get("password") });
      signIn(answer[action].token);
      await resume();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  show(form);
  form.querySelector("#password").focus();
}

// -- the home page --------------------------------------------------------------------------

let streams = [];
// Finished explanations by movie id, kept while the user stays signed in: a rating or a
// dismissal re-renders the rows without writing the finished ones again.
const explained = new Map();
function stopStreams() {
  for (const stop of streams) stop();
  streams = [];
}

// Who wrote a finished explanation, and, where the template wrote it, why, in words on the card.
function finished(badge, into, modelWrote, reason) {
  Object.assign(badge, modelWrote
    ? { textContent: "written by the model", className: "badge llm", title: "the first sentence is cinerec's, stating the largest reason; the model wrote the rest" }
    : { textContent: "template", className: "badge template", title: "" });
  if (!modelWrote && reason) into.after(h("p", { class: "hint because" }, `Written by the template: ${reason}.`));
}

function stream(movieId, into, badge) {
  const me = claims();
  if (!me) return;
  into.textContent = "";
  into.classList.add("writing");
  into.setAttribute("aria-busy", "true"); // read out once, when whole, not word by word
  Object.assign(badge, { textContent: "writing…", className: "badge", title: "" });
  into.parentElement?.querySelector(".because")?.remove();
  let modelWrote = false, reason = "";
  const { unsubscribe } = client
    .subscription(Q.explanation, { u: me.uid, m: movieId })
    .subscribe((result) => {
      if (result.error) {
        const first = result.error.graphQLErrors[0];
        into.textContent = first?.message || result.error.message;
        into.classList.remove("writing");
        into.removeAttribute("aria-busy");
        if (first?.extensions?.code === "UNAUTHENTICATED" && token) sessionEnded();
        return;
      }
      const chunk = result.data.explanation;
      into.append(chunk.text);
      // The opening sentence is always the server's; who wrote the rest is known at the end,
      // so the badge says "writing" until then instead of flipping from one to the other.
      if (chunk.source === "LLM") modelWrote = true;
      if (chunk.error) reason = chunk.error; // why the template stood in, or why the stream ended
      const waiting = chunk.error === NOT_READY;
      if (waiting) document.getElementById("model-notice")?.removeAttribute("hidden");
      if (chunk.done) {
        into.classList.remove("writing");
        into.removeAttribute("aria-busy");
        finished(badge, into, modelWrote, waiting ? "" : reason);
        // a text written while the model trains is not kept: the next page asks the model
        if (!waiting) explained.set(movieId, { text: into.textContent, modelWrote, reason });
      }
    });
  streams.push(unsubscribe);
}

// Stars in halves (the API takes 0.5 to 5): ten buttons, each half a star, so a pointer on a
// star's left half rates n - 0.5. One tab stop for all of them (a roving tabindex): the arrow
// keys step by a half, Home and End jump, Enter or Space rates. At rest they show the user's own
// rating, if any (filled, and aria-pressed on its button); otherwise they are empty. A rating
// made here repaints them in place, so the keyboard stays on the star it rated.
const STAR_KEYS = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1 };
const starWord = (value) => `${value} star${value === 1 ? "" : "s"}`;
function stars(movie, onRated, own = null) {
  const group = h("div", {
    class: "stars", role: "group", "aria-label": `Rate ${label(movie)} (arrow keys choose, in halves)`,
    onkeydown: (event) => {
      const all = [...group.querySelectorAll(".star")];
      const at = all.indexOf(document.activeElement);
      if (at < 0) return;
      const to = event.key === "Home" ? 0 : event.key === "End" ? all.length - 1 : at + (STAR_KEYS[event.key] ?? NaN);
      if (Number.isNaN(to)) return;
      event.preventDefault();
      const next = all[Math.max(0, Math.min(all.length - 1, to))];
      for (const star of all) star.tabIndex = star === next ? 0 : -1;
      next.focus();
    },
  });
  const halves = [];
  // the user's rating (null: none) as the stars show it; Tab lands on it, else on one star
  const paint = (rated) => halves.forEach((star, i) => {
    const value = (i + 1) / 2;
    star.classList.toggle("on", rated != null && value <= rated);
    star.tabIndex = value === (rated ?? 1) ? 0 : -1;
    if (rated != null) star.setAttribute("aria-pressed", String(value === rated));
  });
  for (let n = 1; n <= 10; n++) {
    const value = n / 2;
    halves.push(h("button", {
      type: "button",
      class: `star ${n % 2 ? "left" : "right"}`,
      "aria-label": `Rate ${label(movie)} ${starWord(value)}`,
      title: `${value}/5`,
      onclick: act(async () => {
        await run("mutation", Q.rate, { m: movie.movieId, r: value });
        paint(value);
        onRated(value);
      }),
    }, h("span", { "aria-hidden": "true" }, "★")));
  }
  paint(own);
  group.append(...halves);
  return group;
}

// Each reason with its share of what raised the movie's score (the model's own parts).
// The rest of the score is spread over everything else the user rated: said, not hidden.
function reasons(evidence, name) {
  const share = (weight, title) => h("span", { class: "weight", title }, `${Math.round(weight * 100)}%`);
  const rest = 1 - evidence.reduce((sum, e) => sum + e.weight, 0);
  return h("ul", { class: "evidence", "aria-label": name },
    evidence.map((e) => h("li", {}, e.reason, " ", share(e.weight, "its share of what raised this movie's score"))),
    evidence.length && rest >= 0.005 ? h("li", { class: "rest" }, "everything else you rated ", share(rest, "the share of all your other ratings together")) : null);
}

function card(item, streamNow, refresh) {
  const { movie } = item;
  const text = h("p", { class: "explanation", "aria-live": "polite" });
  const badge = h("span", { class: "badge" });
  const why = h("button", { type: "button", class: "secondary", onclick: () => { why.remove(); stream(movie.movieId, text, badge); } }, "Why?");
  const node = h(
    "article",
    { class: "card", "data-movie-id": movie.movieId },
    h("h3", {}, h("a", { href: `#/movie/${movie.movieId}`, onclick: () => run("mutation", Q.click, { id: item.id }).catch(() => {}) }, label(movie))),
    h("p", { class: "genres" }, movie.genres.join(" · ")),
    reasons(item.evidence, "Why it is here"),
    h("div", { class: "why" }, badge, text, streamNow ? null : why),
    h("div", { class: "acts" },
      stars(movie, refresh),
      h("button", { type: "button", class: "secondary", "aria-label": `Not interested in ${label(movie)}`, onclick: act(async () => { await run("mutation", Q.dismiss, { m: movie.movieId }); refresh(); }) }, "Not interested")),
  );
  const done = explained.get(movie.movieId);
  if (done) {
    text.textContent = done.text;
    finished(badge, text, done.modelWrote, done.reason);
    why.remove();
  } else if (streamNow) stream(movie.movieId, text, badge);
  return node;
}

// Where the keyboard was (which row, which card in it) when the rows re-render after a rating
// or a dismissal, so that focus lands on the card now in that place instead of on <body>.
function focusPlace() {
  const card = document.activeElement?.closest?.(".card");
  const row = card?.closest("section.row");
  return row ? { kind: row.dataset.kind, index: [...row.querySelectorAll(".card")].indexOf(card) } : null;
}
function restoreFocus(place) {
  const row = view.querySelector(`section.row[data-kind="${place.kind}"]`) || view.querySelector("section.row");
  const cards = row ? row.querySelectorAll(".card") : [];
  const card = cards[Math.min(place.index, cards.length - 1)];
  (card?.querySelector(".star") || row?.querySelector("h2"))?.focus();
}

async function homeView() {
  const me = claims();
  const seq = renderSeq;
  const load = async () => {
    const place = focusPlace();
    stopStreams();
    const data = await run("query", Q.home, { u: me.uid });
    if (stale(seq)) return;
    let streamed = 0;
    const skip = (event) => { // to the next row's heading, or past the last row
      const next = event.target.closest("section.row").nextElementSibling;
      (next?.querySelector("h2") || document.querySelector("footer"))?.focus();
    };
    const rows = data.homePage.rows.map((row) =>
      h("section", { class: "row", "aria-label": row.title, "data-kind": row.kind },
        h("h2", { tabindex: "-1" }, row.title),
        h("button", { type: "button", class: "skip", onclick: skip }, `Skip the row “${row.title}”`),
        h("div", { class: "cards" }, row.items.map((item) =>
          card(item, !explained.has(item.movie.movieId) && streamed++ < STREAMED_PER_PAGE, refresh)))),
    );
    const notice = h("p", { id: "model-notice", class: "notice", role: "status", hidden: true },
      "Explanations are written by the template until the tuned model is ready; the model writes them once it is promoted.");
    // a new account: what to do first, until a few ratings make the rows its own
    const count = data.user?.ratingsCount ?? 0;
    const onboarding = count < ONBOARDING_RATINGS
      ? h("p", { class: "notice onboarding" },
        "New here? Rate movies you have seen with the stars on any card (half stars too): each rating changes these rows, and a handful make them your own. ",
        h("span", { class: "progress" }, `${count} of ${ONBOARDING_RATINGS} rated so far.`))
      : null;
    show(h("h1", { class: "visually-hidden" }, "Your home page"), onboarding, notice, ...rows);
    if (place) restoreFocus(place);
  };
  const refresh = () => load().catch((e) => { if (!stale(seq)) show(problem(e)); });
  await load();
}

// -- search and a movie's page --------------------------------------------------------------

async function searchView(query) {
  const seq = renderSeq;
  document.getElementById("search-box").value = query;
  const data = await run("query", Q.search, { q: query });
  if (stale(seq)) return;
  show(
    h("h1", {}, `Movies for “${query}”`),
    data.searchMovies.length
      ? h("ol", { class: "hits" }, data.searchMovies.map((hit) =>
        h("li", {}, movieLink(hit.movie), " ", h("span", { class: "genres" }, hit.movie.genres.join(" · ")))))
      : h("p", { class: "empty", role: "status" }, "No movie matches that. Try a title, a genre, or what it is about: “toys that come alive”, “film noir”."),
  );
}

async function movieView(movieId) {
  const seq = renderSeq;
  const data = await run("query", Q.movie, { m: movieId });
  const movie = data.movie;
  if (stale(seq)) return;
  if (!movie) return show(problem(new Error(`No movie ${movieId}`)));
  let why = null;
  if (claims()) {  // signed in: is it among this user's recommendations, and why?
    const mine = (await run("query", Q.why)).me.recommendations.find((r) => r.movie.movieId === movieId);
    why = mine ? h("section", { class: "why-here", "aria-label": "Why it is recommended to you" },
      h("h2", {}, `Recommended to you: number ${mine.rank} in your list`),
      reasons(mine.evidence, "Its reasons")) : null;
  }
  // the user's own rating, in stars and in words (the stars repaint themselves; the words follow)
  const yours = h("p", { role: "status", class: "yours" },
    movie.myRating == null ? "You have not rated it yet." : `Your rating: ${movie.myRating}/5.`);
  const rated = (value) => { yours.textContent = `You rated it ${value}/5.`; };
  const rater = claims() ? stars(movie, rated, movie.myRating) : null;
  if (stale(seq)) return;
  const elsewhere = [
    movie.imdbId ? h("a", { href: `https://www.imdb.com/title/tt${movie.imdbId}/`, rel: "noopener" }, "IMDb") : null,
    movie.tmdbId ? h("a", { href: `https://www.themoviedb.org/movie/${movie.tmdbId}`, rel: "noopener" }, "TMDb") : null,
  ].filter(Boolean);
  show(
    h("article", { class: "movie" },
      h("h1", {}, label(movie)),
      h("p", { class: "genres" }, movie.genres.join(" · ")),
      h("p", {}, movie.averageRating == null ? "No ratings yet." : `Rated ${movie.averageRating.toFixed(1)}/5 by ${movie.ratingsCount} people.`),
      movie.tags.length ? h("p", { class: "tags" }, `Tags: ${movie.tags.join(", ")}`) : null,
      elsewhere.length ? h("p", { class: "elsewhere" }, "Elsewhere: ", elsewhere.flatMap((a, i) => (i ? [" · ", a] : [a]))) : null,
      rater ? h("div", { class: "acts" }, rater, yours) : null),
    why,
    h("section", { "aria-label": "Similar movies" },
      h("h2", {}, "Similar movies"),
      h("ul", { class: "similar" }, data.similarMovies.map((m) => h("li", {}, movieLink(m))))),
  );
}

// -- the user's own lists: what they rated and what they said no to, each with its undo ---------

async function mineView() {
  const me = claims();
  const seq = renderSeq;
  const data = (await run("query", Q.mine, { u: me.uid })).user;
  if (stale(seq)) return;
  const status = h("p", { role: "status", class: "notice", tabindex: "-1" });
  const undo = (what, movie, query, said) =>
    h("button", { type: "button", class: "secondary", "aria-label": `${what} ${label(movie)}`, onclick: act(async (event) => {
      await run("mutation", query, { m: movie.movieId });
      event.target.closest("li").remove();
      status.textContent = said(movie);
      status.focus(); // the button is gone: the keyboard lands on what happened
    }) }, what);
  const rated = data.ratings.edges.map((e) => e.node);
  // a rating in stars and in words, changed in place
  const rerate = (r) => {
    const said = h("span", { class: "yours" }, `you rated it ${r.rating}/5`);
    return h("span", { class: "rerate" },
      stars(r.movie, (value) => { said.textContent = `you rated it ${value}/5`; }, r.rating), " ", said);
  };
  show(
    h("h1", {}, "Your lists"),
    status,
    h("section", { "aria-labelledby": "rated-title" },
      h("h2", { id: "rated-title" }, "Your ratings"),
      data.ratings.totalCount > rated.length ? h("p", { class: "hint" }, `The newest ${rated.length} of ${data.ratings.totalCount}.`) : null,
      rated.length
        ? h("ul", { class: "mine rated" }, rated.map((r) =>
          h("li", {}, movieLink(r.movie), " ", rerate(r), " ",
            undo("Remove rating", r.movie, Q.unrate, (m) => `Your rating of ${label(m)} is removed: it can be recommended again.`))))
        : h("p", { class: "empty" }, "You have rated nothing yet. Rate a few movies on the home page and your picks follow your taste.")),
    h("section", { "aria-labelledby": "dismissed-title" },
      h("h2", { id: "dismissed-title" }, "Not interested"),
      data.dismissedMovies.length
        ? h("ul", { class: "mine dismissed" }, data.dismissedMovies.map((m) =>
          h("li", {}, movieLink(m), " ",
            undo("Undo", m, Q.undismiss, (x) => `${label(x)} can be recommended to you again.`))))
        : h("p", { class: "empty" }, "Nothing here: “Not interested” on a card puts a movie here, and Undo takes it back.")),
    yourData(),
  );
}

// Everything held about you, as a file; and your account erased with all of it.
function yourData() {
  const download = h("button", { type: "button", class: "secondary", onclick: act(async () => {
    const data = (await run("query", Q.exportMine)).exportMyData;
    const file = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
    const link = h("a", { href: URL.createObjectURL(file), download: "cinerec-my-data.json" });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }) }, "Download everything held about you");
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "erase", "aria-labelledby": "erase-title" },
    h("h3", { id: "erase-title" }, "Delete your account"),
    h("p", { class: "hint" }, "Your account, ratings, dismissals and clicks are erased at once and for good; you are signed out everywhere."),
    h("label", { for: "erase-password" }, "Your password, to confirm"),
    h("input", { id: "erase-password", type: "password", required: true, autocomplete: "current-password" }),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Delete my account and everything held about me")),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await run("mutation", Q.erase, { p: form.querySelector("#erase-password").value });
    } catch (e) {
      error.textContent = e.message; // a wrong password: nothing was changed, still signed in
      form.querySelector("#erase-password").focus();
      return;
    }
    sessionStorage.removeItem(RESUME_KEY);
    notice = "Your account and everything held about you were erased.";
    signIn(null);
    location.hash = "#/signin";
  });
  return h("section", { "aria-labelledby": "data-title" },
    h("h2", { id: "data-title" }, "Your data"),
    h("p", {}, download),
    form);
}

// -- the admin's view -----------------------------------------------------------------------

function armsChart(arms) {
  // each arm's hit rate as a dot on its 95% interval, on a 0..max scale; the numbers beside it
  // as text, which stays readable where a phone shrinks the drawing
  const width = 320, rowHeight = 34, left = 110;
  const top = Math.max(0.05, ...arms.map((a) => a.hitRateHigh));
  const x = (v) => left + (v / top) * (width - left - 20);
  const pct = (v) => `${(v * 100).toFixed(1)}%`;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${arms.length * rowHeight + 10}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", arms.map((a) => `${a.alias}: hit rate ${pct(a.hitRate)} (${(a.hitRateLow * 100).toFixed(1)}–${pct(a.hitRateHigh)})`).join("; "));
  arms.forEach((arm, i) => {
    const y = i * rowHeight + 20;
    const add = (tag, attrs, text) => {
      const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      if (text) el.textContent = text;
      svg.append(el);
    };
    add("text", { x: 4, y: y + 4, class: "arm" }, `${arm.alias} v${arm.version}`);
    add("line", { x1: x(arm.hitRateLow), x2: x(arm.hitRateHigh), y1: y, y2: y, class: "interval" });
    add("circle", { cx: x(arm.hitRate), cy: y, r: 5, class: "rate" });
  });
  const numbers = h("ul", { class: "arms" }, arms.map((arm) => h("li", {},
    `${arm.alias} v${arm.version}: hit rate ${pct(arm.hitRate)} (${pct(arm.hitRateLow)}–${pct(arm.hitRateHigh)}), `
    + `${arm.impressions} shown, ${arm.clicks} clicked`)));
  return h("div", { class: "arms-chart" }, svg, numbers);
}

function ndcg(version) {
  const found = version.metrics.find((m) => /^(hybrid[._])?ndcg_at_10$/.test(m.name));
  return found ? found.value.toFixed(3) : "—";
}

// Services' API keys (made, shown once, revoked) and the audit log's newest lines.
function keysAndAudit(audit, again) {
  const made = h("p", { role: "status", class: "notice", id: "key-made" });
  const form = h("form", { class: "inline", id: "new-key" },
    h("label", { for: "key-name" }, "New key's name"),
    h("input", { id: "key-name", name: "name", required: true, autocomplete: "off", "aria-describedby": "key-name-hint" }),
    h("span", { class: "hint", id: "key-name-hint" }, "2 to 63 lowercase letters, digits, '.', '_' or '-'"),
    h("label", { for: "key-scope" }, "Scope"),
    h("select", { id: "key-scope", name: "scope" },
      h("option", { value: "CATALOG" }, "catalog"), h("option", { value: "RECOMMEND", selected: true }, "recommend"), h("option", { value: "ADMIN" }, "admin")),
    h("button", { type: "submit" }, "Make key"));
  form.addEventListener("submit", act(async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const answer = (await run("mutation", Q.createKey, { n: data.get("name"), s: data.get("scope") })).createApiKey;
    await again();
    const shown = document.getElementById("key-made");
    shown.replaceChildren(`Key ${answer.apiKey.name}, shown this once: `, h("code", { class: "key" }, answer.key));
    shown.focus();
  }));
  const keys = audit.apiKeys.map((k) => h("li", {},
    h("strong", {}, k.name), ` ${k.scope.toLowerCase()}, ck_${k.prefix}_…, made by ${k.createdBy} ${new Date(k.createdAt).toLocaleString()} `,
    k.revokedAt
      ? `(revoked ${new Date(k.revokedAt).toLocaleString()})`
      : h("button", { type: "button", class: "secondary", "aria-label": `Revoke key ${k.name}`, onclick: act(async () => { await run("mutation", Q.revokeKey, { n: k.name }); await again(); }) }, "Revoke")));
  const lines = audit.auditLog.edges.map(({ node: a }) => h("li", {},
    h("time", { datetime: a.at }, new Date(a.at).toLocaleString()), " ",
    h("strong", {}, a.action), ` by ${a.actor} from ${a.client}: ${a.result}`,
    Object.keys(a.arguments).length ? h("code", { class: "arguments" }, JSON.stringify(a.arguments)) : null));
  return [
    h("h2", {}, "API keys"),
    made,
    form,
    keys.length ? h("ul", { class: "keys" }, keys) : h("p", { class: "empty" }, "No keys yet: a service that calls cinerec gets one here."),
    h("h2", {}, "Audit log"),
    lines.length ? h("ol", { class: "audit" }, lines) : h("p", { class: "empty" }, "Nothing recorded yet."),
  ];
}

async function adminView() {
  const seq = renderSeq;
  const [versions, drift, audit] = await Promise.all([run("query", Q.versions), run("query", Q.drift), run("query", Q.audit)]);
  if (stale(seq)) return;
  const serving = versions.modelVersions.find((v) => v.aliases.includes("champion"));
  const status = h("p", { role: "status", id: "serving" }, serving ? `Serving version ${serving.version}.` : "No version serves yet.");
  const rows = versions.modelVersions.map((v) =>
    h("tr", {},
      h("td", {}, v.version),
      // a version that does not serve is promoted from its aliases' cell: four columns fit a phone
      h("td", {}, v.aliases.join(", "), v.aliases.includes("champion") ? null : [v.aliases.length ? " " : null,
        h("button", { type: "button", class: "secondary", "aria-label": `Promote version ${v.version}`, onclick: act(async () => { await run("mutation", Q.promote, { v: v.version }); adminView(); }) }, "Promote")]),
      // the date over the time: the table fits a phone's width without scrolling sideways
      h("td", {}, h("time", { datetime: v.createdAt }, new Date(v.createdAt).toLocaleDateString(), h("br"),
        new Date(v.createdAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }))),
      h("td", {}, ndcg(v))));
  const experimentOut = h("div", {});
  const experimentForm = h("form", { class: "inline" },
    h("label", { for: "experiment-name" }, "Experiment"),
    h("input", { id: "experiment-name", name: "name", required: true }),
    h("button", { type: "submit" }, "Show"));
  experimentForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const { experiment } = await run("query", Q.experiment, { n: new FormData(experimentForm).get("name") });
      experimentOut.replaceChildren(
        h("p", {}, `${experiment.name}: ${experiment.active ? "running" : "stopped"}.`),
        armsChart(experiment.arms),
        h("p", {}, experiment.difference == null ? "" : `Difference ${(experiment.difference * 100).toFixed(1)} points (${(experiment.differenceLow * 100).toFixed(1)} to ${(experiment.differenceHigh * 100).toFixed(1)}).`));
    } catch (e) {
      experimentOut.replaceChildren(problem(e));
    }
  });
  const report = drift.drift;
  show(
    h("h1", {}, "Models"),
    status,
    h("table", { tabindex: "0", "aria-label": "Model versions" }, h("thead", {}, h("tr", {}, ["Version", "Aliases", "Registered", ["nDCG", h("wbr"), "@10"]].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
    h("button", { type: "button", onclick: act(async () => { await run("mutation", Q.rollback); adminView(); }) }, "Roll back the champion"),
    h("h2", {}, "Experiment"),
    experimentForm,
    experimentOut,
    h("h2", {}, "Drift"),
    report
      ? h("p", {}, `${new Date(report.generatedAt).toLocaleString()}, version ${report.modelVersion}: ${report.datasetDrift ? "drift" : "no drift"} (${(report.driftShare * 100).toFixed(0)}% of columns drifted; threshold ${(report.threshold * 100).toFixed(0)}%).`)
      : h("p", {}, "No drift report yet (cinerec monitor drift)."),
    ...keysAndAudit(audit, adminView),
  );
}

// -- routing --------------------------------------------------------------------------------

let rendered = Promise.resolve(); // the view route() is rendering now
// Each render's number: a view whose data arrives after a newer render began (a click, or a
// hash change, while it loaded) shows nothing and starts no stream.
let renderSeq = 0;
const stale = (seq) => seq !== renderSeq;
function route() {
  rendered = render();
  return rendered;
}

async function render() {
  const seq = ++renderSeq;
  stopStreams();
  const hash = location.hash || "#/";
  const me = claims();
  if (!me || (me.exp && me.exp * 1000 < Date.now())) {
    if (me) signIn(null);
    return signInView();
  }
  try {
    if (hash.startsWith("#/search/")) await searchView(decodeURIComponent(hash.slice(9)));
    else if (hash.startsWith("#/movie/")) await movieView(Number(hash.slice(8)));
    else if (hash === "#/admin" && me.role === "admin") await adminView();
    else if (hash === "#/mine" && me.uid != null) await mineView();
    else await homeView();
    if (stale(seq)) return;
    // focus for screen readers, without the scroll that put the first heading under the header
    view.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  } catch (e) {
    if (token && !stale(seq)) show(problem(e)); // a lost session shows sign-in instead, saying why
  }
}

document.getElementById("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("search-box").value.trim();
  if (q) location.hash = `#/search/${encodeURIComponent(q)}`;
});
window.addEventListener("hashchange", route);
renderAccount();
route();
