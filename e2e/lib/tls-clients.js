'use strict';
// Run as a child process by tests/40-tls.test.js, with NODE_EXTRA_CA_CERTS naming the
// test's CA: Node reads that variable only at start, and pusher-js gives its WebSocket
// (faye-websocket) no way to pass a CA, so the clients need a process of their own.
//
// Against the TLS server at 127.0.0.1:$E2E_TLS_PORT it
//   - connects unmodified pusher-js with forceTLS: true (wss) and subscribes,
//   - opens an SSE stream over https (node:https, text/event-stream parsed by hand),
//   - publishes with the pusher SDK with useTLS: true,
// and prints one JSON line with what each client received. Every step has a deadline.

const https = require('node:https');
const Pusher = require('pusher');
const PusherJs = require('pusher-js');

const PORT = Number(process.env.E2E_TLS_PORT);
const WAIT_MS = Number(process.env.E2E_WAIT_MS || 5000);
const CHANNEL = 'tls-channel';

function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Opens an SSE stream; resolves with { status, next(), close() }. */
function sse(url) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, (res) => {
      res.setEncoding('utf8');
      let buf = '';
      const queue = [];
      const waiters = [];
      res.on('data', (chunk) => {
        buf += chunk;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('');
          if (!data) continue;
          const msg = JSON.parse(data);
          const w = waiters.shift();
          if (w) w(msg);
          else queue.push(msg);
        }
      });
      resolve({
        status: res.statusCode,
        contentType: res.headers['content-type'],
        next: () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r))),
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
  });
}

async function main() {
  const out = {};
  const sdk = new Pusher({
    appId: '1',
    key: 'app-key',
    secret: 'app-secret',
    host: '127.0.0.1',
    port: String(PORT),
    useTLS: true,
  });

  const client = new PusherJs('app-key', {
    wsHost: '127.0.0.1',
    wssPort: PORT,
    forceTLS: true,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
  });
  try {
    const channel = client.subscribe(CHANNEL);
    await within(WAIT_MS, 'pusher-js subscription over wss', new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', resolve);
      channel.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
      client.connection.bind('failed', () => reject(new Error('pusher-js connection failed')));
    }));
    out.pusherJsSocketUrl = client.connection.connection.transport.socket.url;
    const wsEvent = new Promise((resolve) => channel.bind('greeting', resolve));

    const stream = await within(WAIT_MS, 'SSE over https', sse(`https://127.0.0.1:${PORT}/app/app-key/sse?channels=${CHANNEL}`));
    out.sseStatus = stream.status;
    out.sseContentType = stream.contentType;
    try {
      // Both subscribers registered before publishing.
      const deadline = Date.now() + WAIT_MS;
      for (;;) {
        const res = await sdk.get({ path: `/channels/${CHANNEL}`, params: { info: 'subscription_count' } });
        const info = await res.json();
        if (info.subscription_count === 2) break;
        if (Date.now() > deadline) throw new Error(`subscription_count stayed ${info.subscription_count}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const triggered = await sdk.trigger(CHANNEL, 'greeting', { text: 'over tls' });
      out.triggerStatus = triggered.status;
      out.pusherJs = await within(WAIT_MS, 'event over wss', wsEvent);
      out.sse = await within(WAIT_MS, 'event over SSE', stream.next());
    } finally {
      stream.close();
    }
  } finally {
    client.disconnect();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${e.stack || e}\n`);
    process.exit(1);
  },
);
