// @segment/analytics-node, unchanged, against a liveprofile collector (tests/integration/test_server_sdks.py).
// Env: COLLECTOR (http://127.0.0.1:port), WRITE_KEY, EVENTS (tracks after one identify).
// Prints one JSON line: {"errors": [...]} once closeAndFlush has delivered (or given up on) everything.
const { Analytics } = require('@segment/analytics-node');

const analytics = new Analytics({
  writeKey: process.env.WRITE_KEY,
  host: process.env.COLLECTOR,
  flushAt: 100,          // one batch: the whole run is one request (and its retries)
  flushInterval: 200,
  maxRetries: 10,
});
const errors = [];
analytics.on('error', (e) => errors.push(String(e && (e.reason || e.code || e))));
analytics.identify({ userId: 'node-1', traits: { email: 'node-1@example.com' } });
for (let i = 0; i < Number(process.env.EVENTS); i++) {
  analytics.track({ userId: 'node-1', event: 'Product Viewed', properties: { i, product_id: 'p' + i } });
}
analytics.closeAndFlush({ timeout: 120000 }).then(() => {
  console.log(JSON.stringify({ errors }));
});
