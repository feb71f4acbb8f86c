// GraphiQL served by cinerec itself (app/static/client/graphiql.*): no script, style or font
// from a CDN, so it works on a machine without internet. Queries over HTTP, subscriptions over
// graphql-ws; a token pasted into the headers tab ({"Authorization": "Bearer …"}) is sent with both.
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import React from "react";
import { createRoot } from "react-dom/client";
import "graphiql/graphiql.css";
import "./graphiql-page.css";

const url = `${location.origin}/graphql`;
const fetcher = createGraphiQLFetcher({
  url,
  subscriptionUrl: url.replace(/^http/, "ws"),
});
createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, { fetcher, defaultEditorToolsVisibility: true, defaultQuery: "{\n  genres\n}\n" }),
);
