'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, sdkJson } = require('../lib/setup');
const { connect, subscribe, waitForEvent, collect, barrier, incoming, framesOf } = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

test('public channel: subscribe, then an SDK trigger arrives with equal data', T, async () => {
  const client = await connect(ctx.server);
  const channel = await subscribe(client, 'ch');
  const got = waitForEvent(channel, 'ev', { client });
  const res = await sdkJson(ctx.sdk.trigger('ch', 'ev', { a: 1 }));
  assert.equal(res.status, 200, `trigger answered ${res.status} ${res.text}`);
  assert.deepEqual(res.body, {});
  const { data } = await got;
  assert.deepEqual(data, { a: 1 });

  // The raw frame: channel + event + data as a JSON string, plus Crier's "id" extension.
  const frame = incoming(client).find((f) => f.event === 'ev' && f.channel === 'ch');
  assert.ok(frame, framesOf(client));
  assert.equal(typeof frame.data, 'string', 'event data must be sent as the string the publisher gave');
  assert.deepEqual(JSON.parse(frame.data), { a: 1 });
  assert.equal(typeof frame.id, 'string', `SPEC §2: published events carry a top-level "id"; frame: ${JSON.stringify(frame)}`);
  assert.match(frame.id, /^[A-Za-z0-9\-._~]+$/);
});

test('public channel: string data and events in publish order', T, async () => {
  const client = await connect(ctx.server);
  const channel = await subscribe(client, 'ordered');
  const seen = collect(channel, 'n');
  for (let i = 0; i < 20; i++) {
    await ctx.sdk.trigger('ordered', 'n', String(i));
  }
  const last = waitForEvent(channel, 'done', { client });
  await ctx.sdk.trigger('ordered', 'done', 'x');
  await last;
  // pusher-js hands over JSON-parsed data: "0".."19" parse as numbers.
  assert.deepEqual(
    seen.map((s) => s.data),
    Array.from({ length: 20 }, (_, i) => i),
  );
});

test('unsubscribe: no more events after pusher:unsubscribe', T, async () => {
  const a = await connect(ctx.server);
  const b = await connect(ctx.server);
  const chA = await subscribe(a, 'unsub');
  const chB = await subscribe(b, 'unsub');
  assert.ok(chA.subscribed);
  a.unsubscribe('unsub');
  // A's unsubscribe frame was sent before its subscribe to a second channel, whose success
  // proves the server has read past the unsubscribe.
  const syncA = await subscribe(a, 'unsub-sync');
  const gotB = waitForEvent(chB, 'after', { client: b });
  await ctx.sdk.trigger('unsub', 'after', { x: 1 });
  await gotB;
  // Anything the server still queued for A on 'unsub' comes before this marker.
  await barrier(ctx.sdk, 'unsub-sync', [{ channel: syncA, client: a }]);
  // pusher-js drops frames for channels it left, so look at the wire.
  const leaked = incoming(a).filter((f) => f.channel === 'unsub' && f.event === 'after');
  assert.equal(leaked.length, 0, `unsubscribed client still got the event\n${framesOf(a)}`);
});

test('a channel name with every allowed character works', T, async () => {
  const name = 'Az09-_=@,.;';
  const client = await connect(ctx.server);
  const channel = await subscribe(client, name);
  const got = waitForEvent(channel, 'ev', { client });
  await ctx.sdk.trigger(name, 'ev', 'ok');
  assert.equal((await got).data, 'ok');
});
