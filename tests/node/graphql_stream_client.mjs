// A GraphQL subscription client on the npm packages `graphql-ws` (WebSocket,
// graphql-transport-ws) and `graphql-sse` (distinct connections mode): subscribes to
// `events` after a position and prints one JSON line per item, then {"done": true};
// a failure prints {"error": ..., "code": <close code or null>}.
//
// node graphql_stream_client.mjs <ws|sse> <url> <token> <after> <count>
import { createClient as createWsClient } from "graphql-ws";
import { createClient as createSseClient } from "graphql-sse";
import WebSocket from "ws";

const [mode, url, token, after, count] = process.argv.slice(2);
const want = Number(count);
const query = `subscription Live($after: ID) {
  events(types: ["key.*"], after: $after) { position event { id kind subject } reset { reason } }
}`;
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");

const client =
  mode === "ws"
    ? createWsClient({
        url,
        webSocketImpl: WebSocket,
        connectionParams: { authorization: `Bearer ${token}` },
        retryAttempts: 0,
        lazy: true,
      })
    : createSseClient({
        url,
        headers: { authorization: `Bearer ${token}` },
        retryAttempts: 0,
      });

let seen = 0;
const finished = new Promise((resolve) => {
  const unsubscribe = client.subscribe(
    { query, variables: { after: after === "" ? null : after } },
    {
      next: (result) => {
        if (seen >= want) return;
        if (result.errors) {
          print({ error: result.errors, code: null });
          unsubscribe();
          resolve();
          return;
        }
        print(result.data.events);
        seen += 1;
        if (seen === want) {
          unsubscribe();
          resolve();
        }
      },
      error: (error) => {
        const code = typeof error?.code === "number" ? error.code : null;
        print({ error: String(error?.reason ?? error?.message ?? error), code });
        resolve();
      },
      complete: () => resolve(),
    },
  );
});
await finished;
print({ done: true, seen });
await client.dispose();
process.exit(0);
