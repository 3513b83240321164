'use strict';
// The crash scenario of tests 41 and 42 in headless Chromium: a page on another origin
// loads stock pusher-js (its browser build) and, in one run, Crier's
// /js/crier-resume.js with one <script> tag. With the add-on the page ends with every
// acknowledged message exactly once and in order; without it, the messages acknowledged
// while it was away are lost.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { killScenario } = require('../lib/resume');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const PUSHER_JS = path.join(__dirname, '..', 'node_modules', 'pusher-js', 'dist', 'web', 'pusher.min.js');

function pageHtml({ crierUrl, wsPort, addOn }) {
  return `<!doctype html><html><body>
<script src="/pusher.min.js"></script>
${addOn ? `<script src="${crierUrl}/js/crier-resume.js"></script>` : ''}
<script>
window.got = []; window.subs = 0;
const pusher = new Pusher('app-key', { wsHost: '127.0.0.1', wsPort: ${wsPort}, forceTLS: false, enabledTransports: ['ws'], cluster: 'mt1', disableStats: true });
const ch = pusher.subscribe('ledger');
ch.bind('entry', (d) => window.got.push(Number(d)));
ch.bind('crier:gap', () => window.got.push('GAP'));
ch.bind('pusher:subscription_succeeded', () => window.subs++);
window.pusher = pusher;
</script></body></html>`;
}

let browser;
let pages;
before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  pages = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/pusher.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(fs.readFileSync(PUSHER_JS));
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(pageHtml({ crierUrl: url.searchParams.get('crier'), wsPort: url.searchParams.get('ws'), addOn: url.searchParams.get('addon') === '1' }));
  });
  await new Promise((r) => pages.listen(0, '127.0.0.1', r));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  if (browser) await browser.close();
  if (pages) pages.close();
});

/** The scenario's subscriber as a page in Chromium. */
function browserSubscriber(addOn) {
  let page;
  const errors = [];
  return {
    async start(crier, wsPort) {
      page = await browser.newPage();
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`http://127.0.0.1:${pages.address().port}/?crier=${encodeURIComponent(crier.url)}&ws=${wsPort}&addon=${addOn ? 1 : 0}`);
      await page.waitForFunction(() => window.subs >= 1, null, { timeout: 10000 });
    },
    received: () => page.evaluate(() => window.got),
    resubscriptions: () => page.evaluate(() => window.subs - 1),
    waitState: (states, timeout) =>
      page.waitForFunction((s) => s.includes(window.pusher.connection.state), states, { timeout }),
    describe: async () =>
      `page state ${await page.evaluate(() => window.pusher.connection.state)}, got ${JSON.stringify(await page.evaluate(() => window.got))}, errors ${JSON.stringify(errors)}`,
    errors,
    stop: () => page && page.close(),
  };
}

test('Chromium, with crier-resume.js: every acknowledged message once, in order, across SIGKILL and restart', { timeout: 90000 }, async () => {
  const sub = browserSubscriber(true);
  const { received, acked, ackedWhileAway } = await killScenario({ sub });
  assert.deepEqual(sub.errors, []);
  assert.ok(!received.includes('GAP'), 'history covered the outage');
  for (let i = 1; i < received.length; i++) {
    assert.ok(received[i] > received[i - 1], `out of order or twice at ${i}: ${received.slice(Math.max(0, i - 3), i + 2)}`);
  }
  const got = new Set(received);
  assert.deepEqual(acked.filter((n) => !got.has(n)), [], 'acknowledged but never received');
  assert.ok(ackedWhileAway.every((n) => got.has(n)));
});

test('Chromium, stock pusher-js alone: the messages acknowledged while it was away are lost', { timeout: 90000 }, async () => {
  const sub = browserSubscriber(false);
  const { received, ackedWhileAway } = await killScenario({ sub });
  const got = new Set(received);
  assert.deepEqual(ackedWhileAway.filter((n) => !got.has(n)), ackedWhileAway);
  assert.ok(ackedWhileAway.length >= 20);
});
