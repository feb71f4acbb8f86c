// Builds the client into app/static/client (checked in: `make demo` serves it without node).
// tests/web/test_client.py rebuilds it into a temporary folder and fails when the two differ.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || join(here, "..", "app", "static", "client");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  legalComments: "none",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
await build({
  entryPoints: [join(here, "src", "graphiql.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  legalComments: "none",
  outfile: join(out, "graphiql.js"),
  define: { "process.env.NODE_ENV": '"production"' },
  loader: { ".woff": "dataurl", ".woff2": "dataurl", ".svg": "dataurl" },
  logLevel: "warning",
});
copyFileSync(join(here, "src", "app.css"), join(out, "app.css"));
copyFileSync(join(here, "graphiql.html"), join(out, "graphiql.html"));
copyFileSync(join(here, "index.html"), join(out, "index.html"));
