'use strict';
// crier-resume.js, the add-on Crier serves for stock pusher-js: loaded exactly as served,
// it makes pusher-js resume every channel from the last message it got, across a SIGKILL
// of the server. tests/42 runs the same scenario without it and shows the loss.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { useServer } = require('../lib/setup');
const { PusherJs, connect, subscribe, waitForEvent, waitForState, collect, framesOf, baseOptions, disconnect } = require('../lib/client');
const { gateProxy, loadAddOn, killScenario } = require('../lib/resume');

const ctx = useServer({ extraArgs: ['--history-max-messages', '5'] });

// Loaded once, in the first test: a file-level before() here could run before
// useServer's has started the server.
let addOn;
const withAddOn = async () => (addOn = addOn || (await loadAddOn(ctx.server)));

test('served as a classic script and as an ES module, both JavaScript for any origin', async () => {
  await withAddOn();
  for (const [file, type] of [['crier-resume.js', 'text/javascript; charset=utf-8'], ['crier-resume.mjs', 'text/javascript; charset=utf-8']]) {
    const res = await fetch(`${ctx.server.url}/js/${file}`, { headers: { Origin: 'http://elsewhere.test' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), type);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crier-resume-mjs-'));
  const file = path.join(dir, 'crier-resume.mjs');
  fs.writeFileSync(file, await (await fetch(`${ctx.server.url}/js/crier-resume.mjs`)).text());
  const mod = await import(pathToFileURL(file));
  assert.equal(typeof mod.default, 'function');
  assert.equal(mod.crierResume, mod.default);
  assert.equal(mod.default(PusherJs), PusherJs, 'applying it to an already patched class changes nothing');
});

test('SIGKILL, restart on the same port and data: every acknowledged message arrives exactly once, in order', { timeout: 90000 }, async () => {
  await withAddOn();
  const { received, acked, ackedWhileAway, sub } = await killScenario();
  const client = sub.client;
  assert.ok(!received.includes('GAP'), `crier:gap: history should have covered the outage\n${framesOf(client)}`);
  // A publish cut by the kill may be stored without its answer: such a message may
  // arrive too, but nothing twice and nothing out of order.
  for (let i = 1; i < received.length; i++) {
    assert.ok(received[i] > received[i - 1], `out of order or twice at ${i}: ${received.slice(Math.max(0, i - 3), i + 2)}`);
  }
  const got = new Set(received);
  const missing = acked.filter((n) => !got.has(n));
  assert.deepEqual(missing, [], `acknowledged but never received\n${framesOf(client)}`);
  assert.ok(ackedWhileAway.every((n) => got.has(n)));
  // pusher-js resubscribed with `since` (what the add-on adds).
  const resub = client.__recs.flatMap((r) => r.frames).filter((f) => f.dir === 'out' && f.data.includes('pusher:subscribe'));
  assert.equal(resub.length, 2, framesOf(client));
  assert.doesNotMatch(resub[0].data, /since/);
  assert.match(JSON.parse(resub[1].data).data.since, /^[A-Za-z0-9._~-]+$/);
});

test('when history no longer reaches back, the channel gets crier:gap first, then what is retained', { timeout: 30000 }, async () => {
  await withAddOn();
  const proxy = await gateProxy(ctx.server.port);
  try {
    const client = await connect(ctx.server, { wsPort: proxy.port }, { label: 'gap' });
    const ch = await subscribe(client, 'gappy');
    const seen = [];
    // pusher-js JSON-decodes data: "6" arrives as 6.
    ch.bind_global((event, data) => {
      if (event === 'crier:gap' || event === 'entry') seen.push(event === 'crier:gap' ? 'GAP' : data);
    });
    const first = waitForEvent(ch, 'entry', { client });
    await ctx.sdk.trigger('gappy', 'entry', '0');
    await first;
    proxy.close();
    proxy.dropAll();
    await waitForState(client, ['connecting', 'unavailable']);
    // Ten while away; history keeps five (--history-max-messages 5).
    for (let i = 1; i <= 10; i++) await ctx.sdk.trigger('gappy', 'entry', String(i));
    const last = waitForEvent(ch, 'entry', { client, filter: (d) => d === 10, timeout: 20000 });
    proxy.open();
    await last;
    assert.deepEqual(seen, [0, 'GAP', 6, 7, 8, 9, 10], framesOf(client));
  } finally {
    await proxy.shutdown();
  }
});

test('laravel-echo on the patched pusher-js resumes too', { timeout: 30000 }, async () => {
  await withAddOn();
  const Echo = (await import('laravel-echo')).default;
  const proxy = await gateProxy(ctx.server.port);
  const echo = new Echo({ broadcaster: 'pusher', key: ctx.server.key, Pusher: PusherJs, ...baseOptions(ctx.server), wsPort: proxy.port });
  const client = echo.connector.pusher;
  client.__label = 'echo';
  client.__recs = [];
  client.connection.bind('state_change', () => {
    const conn = client.connection.connection;
    const rec = conn && conn.transport && conn.transport.socket && conn.transport.socket.__crierRec;
    if (rec && !client.__recs.includes(rec)) client.__recs.push(rec);
  });
  try {
    const seen = [];
    echo.channel('echoed').listen('.entry', (d) => seen.push(d));
    if (!client.channel('echoed').subscribed) await waitForEvent(client.channel('echoed'), 'pusher:subscription_succeeded');
    const first = waitForEvent(client.channel('echoed'), 'entry', { filter: (d) => d === 'a' });
    await ctx.sdk.trigger('echoed', 'entry', 'a');
    await first;
    proxy.close();
    proxy.dropAll();
    await waitForState(client, ['connecting', 'unavailable']);
    await ctx.sdk.trigger('echoed', 'entry', 'b');
    await ctx.sdk.trigger('echoed', 'entry', 'c');
    const last = waitForEvent(client.channel('echoed'), 'entry', { filter: (d) => d === 'c', timeout: 20000, client });
    proxy.open();
    await last;
    assert.deepEqual(seen, ['a', 'b', 'c']);
  } finally {
    await disconnect(client);
    await proxy.shutdown();
  }
});
