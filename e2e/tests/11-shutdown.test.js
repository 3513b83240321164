'use strict';
// SPEC §8: on SIGTERM, WebSocket clients are told to reconnect (4200) and the server exits
// within a bounded time. Runs last: it stops its own server.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer } = require('../lib/setup');
const { connect, subscribe, currentRecording, waitForState, framesOf } = require('../lib/client');

const ctx = useServer();

test('SIGTERM: pusher-js gets close 4200 (reconnect), the server exits 0 within 5 s', { timeout: 20000 }, async () => {
  const client = await connect(ctx.server);
  await subscribe(client, 'bye');
  const rec = currentRecording(client);
  const reconnecting = waitForState(client, ['connecting', 'unavailable', 'disconnected'], { timeout: 6000 });
  const started = Date.now();
  const exit = await ctx.server.stop(); // SIGTERM, SIGKILL after 5 s
  const took = Date.now() - started;
  assert.equal(exit.signal, null, `server did not exit by itself within 5 s (killed with ${exit.signal}); stderr:\n${ctx.server.stderr()}`);
  assert.equal(exit.code, 0, `exit code ${exit.code}; stderr:\n${ctx.server.stderr()}`);
  assert.ok(took < 5000, `shutdown took ${took} ms`);
  const close = await rec.closed;
  assert.equal(close.code, 4200, `close code on shutdown: ${close.code}\n${framesOf(client)}`);
  // 4200-4299 = "retry": pusher-js goes back to connecting by itself.
  assert.equal(await reconnecting, 'connecting');
});
