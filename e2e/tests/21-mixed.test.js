'use strict';
// One publisher (the pusher SDK); subscribers on WebSocket (pusher-js), SSE (a streamed
// fetch, parsed as text/event-stream) and long-poll at once: all see the same sequence.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer } = require('../lib/server');
const { sdkFor } = require('../lib/auth');
const { PusherJs, baseOptions } = require('../lib/client');

const N = 200;

async function* sseEvents(url, signal) {
  const res = await fetch(url, { signal });
  assert.equal(res.status, 200);
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('');
      if (data) yield JSON.parse(data);
    }
  }
}

test('WebSocket, SSE and long-poll subscribers see the same sequence', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const sdk = sdkFor({ appId: '1', key: 'app-key', secret: 'app-secret', port: server.port });

  const ws = new PusherJs("app-key", baseOptions(server));
  t.after(() => ws.disconnect());
  const wsSeen = [];
  const channel = ws.subscribe('mixed');
  await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
  channel.bind('m', (d) => wsSeen.push(d.n));

  const abort = new AbortController();
  t.after(() => abort.abort());
  const sseSeen = [];
  const sseDone = (async () => {
    try {
      for await (const m of sseEvents(`${server.url}/app/app-key/sse?channels=mixed`, abort.signal)) {
        sseSeen.push(JSON.parse(m.data).n);
        if (sseSeen.length === N) return;
      }
    } catch (e) {
      if (e.name !== 'AbortError') throw e;
    }
  })();

  // Long-poll from "now": the first poll returns the starting cursor.
  let cursor = (await (await fetch(`${server.url}/app/app-key/poll?channels=mixed&timeout=0`)).json()).cursor;
  const pollSeen = [];
  const pollDone = (async () => {
    while (pollSeen.length < N) {
      const page = await (await fetch(`${server.url}/app/app-key/poll?channels=mixed&timeout=5&cursor=${cursor}`)).json();
      for (const m of page.messages) pollSeen.push(JSON.parse(m.data).n);
      cursor = page.cursor;
    }
  })();

  // Wait until the SSE stream is registered (the WebSocket one is, the poller reads history).
  const deadline = Date.now() + 10000;
  for (;;) {
    const info = await (await sdk.get({ path: '/channels/mixed', params: { info: 'subscription_count' } })).json();
    if (info.subscription_count >= 2) break;
    assert.ok(Date.now() < deadline, 'SSE stream never subscribed');
    await new Promise((r) => setTimeout(r, 20));
  }

  for (let i = 0; i < N; i += 10) {
    await sdk.triggerBatch(Array.from({ length: 10 }, (_, k) => ({ channel: 'mixed', name: 'm', data: { n: i + k } })));
  }
  await Promise.all([sseDone, pollDone]);
  const until = Date.now() + 10000;
  while (wsSeen.length < N && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  const want = Array.from({ length: N }, (_, i) => i);
  assert.deepEqual(wsSeen, want, 'WebSocket');
  assert.deepEqual(sseSeen, want, 'SSE');
  assert.deepEqual(pollSeen, want, 'long-poll');
});
