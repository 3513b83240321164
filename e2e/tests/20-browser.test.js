'use strict';
// A real browser (headless Chromium driven by playwright-core) consumes Crier over its
// own EventSource and a fetch long-poll loop from a page on another origin. The test
// publishes, kills the server with SIGKILL, restarts it on the same port and data
// directory, publishes more, and checks in the page that every message arrived exactly
// once and in order on both transports (EventSource resumes with Last-Event-ID, the
// poll loop with its cursor).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const Pusher = require('pusher');
const { chromium } = require('playwright-core');
const { binaryPath } = require('../lib/server');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const N = 60;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function startCrier(port, dataDir) {
  const child = spawn(binaryPath(), ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--udp-listen', ''], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`crier did not start: ${err}`)), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on http://')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => reject(new Error(`crier exited ${code}: ${err}`)));
  });
}

function pageHtml(crier) {
  return `<!doctype html><html><body><script>
window.sse = []; window.poll = []; window.sseOpens = 0;
const base = '${crier}/app/app-key';
const es = new EventSource(base + '/sse?channels=browser');
es.onopen = () => { window.sseOpens++; };
es.onmessage = (e) => { const m = JSON.parse(e.data); window.sse.push(m.event === 'crier:gap' ? 'GAP' : m.data); };
(async () => {
  let cursor = '';
  for (;;) {
    try {
      const r = await fetch(base + '/poll?channels=browser&timeout=5&cursor=' + cursor);
      if (!r.ok) throw new Error('status ' + r.status);
      const j = await r.json();
      for (const m of j.messages) window.poll.push(m.event === 'crier:gap' ? 'GAP' : m.data);
      cursor = j.cursor;
    } catch (e) {
      await new Promise((res) => setTimeout(res, 200));
    }
  }
})();
</script></body></html>`;
}

test('EventSource and fetch long-poll in Chromium get every message once, in order, across a server kill', { timeout: 120000 }, async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  const port = await freePort();
  const crierUrl = `http://127.0.0.1:${port}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'crier-browser-'));
  let crier = await startCrier(port, dataDir);
  t.after(() => crier.kill('SIGKILL'));

  // The page comes from another origin, so CORS is exercised.
  const pages = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(pageHtml(crierUrl));
  });
  await new Promise((r) => pages.listen(0, '127.0.0.1', r));
  t.after(() => pages.close());

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${pages.address().port}/`);

  const sdk = new Pusher({ appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(port), useTLS: false });
  const stats = async () => {
    const res = await sdk.get({ path: '/channels/browser', params: { info: 'subscription_count' } });
    return res.json();
  };
  // Both transports are subscribed (the SSE stream and a pending poll).
  const deadline = Date.now() + 20000;
  while ((await stats()).subscription_count < 2) {
    assert.ok(Date.now() < deadline, 'page never subscribed');
    await new Promise((r) => setTimeout(r, 50));
  }

  for (let i = 0; i < N / 2; i++) await sdk.trigger('browser', 'm', String(i));
  await page.waitForFunction((n) => window.sse.length >= n && window.poll.length >= n, N / 2, { timeout: 20000 });

  // kill -9 and restart on the same port and data directory.
  crier.kill('SIGKILL');
  await new Promise((r) => crier.once('exit', r));
  crier = await startCrier(port, dataDir);
  for (let i = N / 2; i < N; i++) await sdk.trigger('browser', 'm', String(i));

  await page.waitForFunction((n) => window.sse.length >= n && window.poll.length >= n, N, { timeout: 30000 });
  const { sse, poll, opens } = await page.evaluate(() => ({ sse: window.sse, poll: window.poll, opens: window.sseOpens }));
  const want = Array.from({ length: N }, (_, i) => String(i));
  assert.deepEqual(sse, want, 'EventSource: every message once, in order');
  assert.deepEqual(poll, want, 'long-poll: every message once, in order');
  assert.ok(opens >= 2, 'the EventSource reconnected after the kill');
});
