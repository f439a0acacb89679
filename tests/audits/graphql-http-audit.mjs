// Every GraphQL-over-HTTP server audit of graphql-http (MUST, SHOULD and MAY)
// against a live server, with a bearer token on every request.
//
//   node graphql-http-audit.mjs --url http://127.0.0.1:8000/graphql --token <jwt>
//
// Prints one JSON line per audit: {"id", "name", "status", "reason"?}, where
// status is "ok", or "error" / "warn" / "notice" as graphql-http reports a
// failed MUST / SHOULD / MAY. Exits 1 if any audit failed, 2 on bad usage.
import { parseArgs } from "node:util";
import { serverAudits } from "graphql-http";

const { values } = parseArgs({
  options: { url: { type: "string" }, token: { type: "string" } },
});
if (!values.url || !values.token) {
  console.error("usage: node graphql-http-audit.mjs --url <http url of /graphql> --token <jwt>");
  process.exit(2);
}

// The server answers 401 without a token; the audits' own requests carry none,
// so every one goes through this fetch, which adds it.
function fetchWithToken(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${values.token}`);
  return fetch(input, { ...init, headers });
}

let failed = 0;
for (const audit of serverAudits({ url: values.url, fetchFn: fetchWithToken })) {
  const result = await audit.fn();
  const line = { id: result.id, name: result.name, status: result.status };
  if (result.status !== "ok") {
    failed += 1;
    line.reason = result.reason;
    line.httpStatus = result.response?.status;
    line.contentType = result.response?.headers.get("content-type");
  }
  console.log(JSON.stringify(line));
}
process.exit(failed === 0 ? 0 : 1);
