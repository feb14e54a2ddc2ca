// A webhook receiver on the npm `standardwebhooks` package, for the Python suite.
// Usage: node webhook_receiver.mjs <whsec_secret>...
// Listens on 127.0.0.1 (an ephemeral port, printed as `{"port": N}`), verifies every
// request with each secret in turn, answers 204 when one verifies and 401 when none does,
// and prints one JSON line per request: {"id", "verified", "secret_index", "type"}.
import http from "node:http";
import { Webhook } from "standardwebhooks";

const verifiers = process.argv.slice(2).map((secret) => new Webhook(secret));

const server = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks);
    let index = -1;
    let payload = null;
    for (const [i, verifier] of verifiers.entries()) {
      try {
        payload = verifier.verify(body, request.headers);
        index = i;
        break;
      } catch {
        // try the next secret
      }
    }
    const line = {
      id: request.headers["webhook-id"] ?? null,
      verified: index >= 0,
      secret_index: index,
      type: payload ? payload.type : null,
    };
    process.stdout.write(JSON.stringify(line) + "\n");
    response.writeHead(index >= 0 ? 204 : 401);
    response.end();
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
