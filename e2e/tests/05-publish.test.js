'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, sdkJson } = require('../lib/setup');
const { connect, subscribe, waitForEvent, collect, barrier, framesOf } = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

test('trigger to several channels at once reaches each channel', T, async () => {
  const client = await connect(ctx.server);
  const a = await subscribe(client, 'multi-a');
  const b = await subscribe(client, 'multi-b');
  const gotA = waitForEvent(a, 'both', { client });
  const gotB = waitForEvent(b, 'both', { client });
  const res = await sdkJson(ctx.sdk.trigger(['multi-a', 'multi-b'], 'both', { n: 2 }));
  assert.equal(res.status, 200, res.text);
  assert.deepEqual((await gotA).data, { n: 2 });
  assert.deepEqual((await gotB).data, { n: 2 });
});

test('triggerBatch delivers every event of the batch, in order per channel', T, async () => {
  const c1 = await connect(ctx.server);
  const c2 = await connect(ctx.server);
  const x = await subscribe(c1, 'batch-x');
  const y = await subscribe(c2, 'batch-y');
  const seenX = collect(x, 'b');
  const seenY = collect(y, 'b');
  const res = await sdkJson(
    ctx.sdk.triggerBatch([
      { channel: 'batch-x', name: 'b', data: { i: 1 } },
      { channel: 'batch-y', name: 'b', data: { i: 2 } },
      { channel: 'batch-x', name: 'b', data: { i: 3 } },
      { channel: 'batch-x', name: 'b', data: 'plain string' },
    ]),
  );
  assert.equal(res.status, 200, res.text);
  // No event asked for `info`: the answer is {} (README, Endpoints).
  assert.deepEqual(res.body, {}, `batch_events answer: ${res.text}`);
  await barrier(ctx.sdk, 'batch-x', [{ channel: x, client: c1 }]);
  await barrier(ctx.sdk, 'batch-y', [{ channel: y, client: c2 }]);
  assert.deepEqual(seenX.map((s) => s.data), [{ i: 1 }, { i: 3 }, 'plain string']);
  assert.deepEqual(seenY.map((s) => s.data), [{ i: 2 }]);
});

test('trigger with socket_id: that socket is skipped, the others get it', T, async () => {
  const sender = await connect(ctx.server, {}, { label: 'sender' });
  const other = await connect(ctx.server, {}, { label: 'other' });
  const chS = await subscribe(sender, 'excl');
  const chO = await subscribe(other, 'excl');
  const seenS = collect(chS, 'news');
  const gotO = waitForEvent(chO, 'news', { client: other });
  const res = await sdkJson(
    ctx.sdk.trigger('excl', 'news', { hi: 1 }, { socket_id: sender.connection.socket_id }),
  );
  assert.equal(res.status, 200, res.text);
  assert.deepEqual((await gotO).data, { hi: 1 });
  await barrier(ctx.sdk, 'excl', [{ channel: chS, client: sender }]);
  assert.equal(seenS.length, 0, `excluded socket got the event\n${framesOf(sender)}`);
});

test('triggerBatch items honour their own socket_id', T, async () => {
  const sender = await connect(ctx.server, {}, { label: 'sender' });
  const other = await connect(ctx.server, {}, { label: 'other' });
  const chS = await subscribe(sender, 'bexcl');
  const chO = await subscribe(other, 'bexcl');
  const seenS = collect(chS, 'e');
  const seenO = collect(chO, 'e');
  await ctx.sdk.triggerBatch([
    { channel: 'bexcl', name: 'e', data: { k: 'excluded' }, socket_id: sender.connection.socket_id },
    { channel: 'bexcl', name: 'e', data: { k: 'all' } },
  ]);
  await barrier(ctx.sdk, 'bexcl', [
    { channel: chS, client: sender },
    { channel: chO, client: other },
  ]);
  assert.deepEqual(seenO.map((s) => s.data), [{ k: 'excluded' }, { k: 'all' }]);
  assert.deepEqual(seenS.map((s) => s.data), [{ k: 'all' }], framesOf(sender));
});

test('trigger info=subscription_count answers per channel (Pusher format)', T, async () => {
  const c1 = await connect(ctx.server);
  const c2 = await connect(ctx.server);
  await subscribe(c1, 'info-ch');
  await subscribe(c2, 'info-ch');
  const res = await sdkJson(ctx.sdk.trigger('info-ch', 'ev', {}, { info: 'subscription_count' }));
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.body, { channels: { 'info-ch': { subscription_count: 2 } } });

  const batch = await sdkJson(
    ctx.sdk.triggerBatch([
      { channel: 'info-ch', name: 'ev', data: {}, info: 'subscription_count' },
      { channel: 'info-empty', name: 'ev', data: {}, info: 'subscription_count' },
    ]),
  );
  assert.equal(batch.status, 200, batch.text);
  assert.ok(batch.body && Array.isArray(batch.body.batch), `batch answer: ${batch.text}`);
  assert.equal(batch.body.batch.length, 2, batch.text);
  assert.deepEqual(batch.body.batch[0], { subscription_count: 2 });
  // An empty channel asked for its count reports 0 (README, Endpoints).
  assert.deepEqual(batch.body.batch[1], { subscription_count: 0 }, batch.text);
});

test('publish errors: bad signature 401, unknown app 404, nothing published', T, async () => {
  const { sdkFor } = require('../lib/auth');
  const client = await connect(ctx.server);
  const ch = await subscribe(client, 'errs');
  const seen = collect(ch, 'nope');

  const badSecret = sdkFor(ctx.server, { secret: 'not-the-secret' });
  const r401 = await sdkJson(badSecret.trigger('errs', 'nope', { x: 1 }));
  assert.equal(r401.status, 401, `bad signature answered ${r401.status} ${r401.text}`);

  const unknown = sdkFor(ctx.server, { appId: 'no-such-app' });
  const r404 = await sdkJson(unknown.trigger('errs', 'nope', { x: 1 }));
  assert.equal(r404.status, 404, `unknown app answered ${r404.status} ${r404.text}`);

  await barrier(ctx.sdk, 'errs', [{ channel: ch, client }]);
  assert.equal(seen.length, 0, framesOf(client));
});

test('oversized event data is rejected with 413 and not delivered', T, async () => {
  const client = await connect(ctx.server);
  const ch = await subscribe(client, 'big');
  const seen = collect(ch, 'huge');
  const r = await sdkJson(ctx.sdk.trigger('big', 'huge', 'x'.repeat(20 * 1024)));
  // README: event data over the app's max_event_size (10,240 bytes by default) is a JSON 413.
  assert.equal(r.status, 413, `20 KiB data answered ${r.status} ${r.text}`);
  assert.deepEqual(r.body, { error: 'event data is 20480 bytes, more than the limit of 10240' }, r.text);
  await barrier(ctx.sdk, 'big', [{ channel: ch, client }]);
  assert.equal(seen.length, 0);
});
