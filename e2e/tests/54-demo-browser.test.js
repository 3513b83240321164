'use strict';
// The demo pages under /demo in headless Chromium, fed the way the README says: the
// order board by examples/php/udp-order.php over UDP (and across a SIGKILL of the
// server), the approval inbox by the HTTP API with its Approve button publishing back,
// the team chat between two browser contexts (presence, typing, history on join).
// Screenshots go to e2e/artifacts/ (CI keeps them; docs/demo/ has copies for the README).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const Pusher = require('pusher');
const { chromium } = require('playwright-core');
const { startServer } = require('../lib/server');
const { freePort, runProc } = require('../lib/proc');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const PHP = path.resolve(__dirname, '..', '..', 'examples', 'php');
const ARTIFACTS = path.resolve(__dirname, '..', 'artifacts');
const WAIT = { timeout: 15000 };

let browser;
let crier;
let port;
let dataDir;
const start = () => startServer({ udp: true, port, dataDir });

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  port = await freePort();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'crier-demo-'));
  crier = await start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  if (browser) await browser.close();
  if (crier) await crier.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const sdk = () => new Pusher({ appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(port), useTLS: false });

async function udpOrders(first) {
  const r = await runProc('php', ['udp-order.php', String(first)], { cwd: PHP, env: { CRIER_UDP: `127.0.0.1:${crier.udpPort}` } });
  assert.equal(r.code, 0, r.describe);
}

async function newPage(context) {
  const page = context ? await context.newPage() : await browser.newPage({ viewport: { width: 820, height: 640 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.errors = errors;
  return page;
}

const orderIds = (page) => page.$$eval('li.order', (lis) => lis.map((li) => li.dataset.orderId));

test('order board: orders sent by PHP over UDP appear at the top, none lost or doubled across a SIGKILL', { timeout: 60000 }, async () => {
  const page = await newPage();
  await page.goto(`${crier.url}/demo/orders`);
  await page.waitForSelector('#status.live', WAIT);
  await udpOrders(1001);
  await page.waitForFunction(() => document.querySelectorAll('li.order').length >= 2, null, WAIT);
  assert.deepEqual(await orderIds(page), ['1002', '1001']);
  assert.equal(await page.textContent('li[data-order-id="1002"]'), '#1002 Globex Ltd1200.50');

  await crier.kill();
  await page.waitForSelector('#status.down', WAIT);
  crier = await start();
  await udpOrders(2001); // likely before the page is back: it must catch up from its cursor
  await page.waitForFunction(() => document.querySelectorAll('li.order').length >= 4, null, WAIT);
  await page.waitForSelector('#status.live', WAIT);
  assert.deepEqual(await orderIds(page), ['2002', '2001', '1002', '1001']);
  assert.equal(await page.isHidden('#gap'), true);
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-orders.png') });
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('approval inbox: a request arrives over long-poll; Approve publishes the decision, which comes back', { timeout: 60000 }, async () => {
  const page = await newPage();
  await page.goto(`${crier.url}/demo/approvals?user=8`);
  const api = sdk();
  const channel = 'private-demo-approvals-8';
  const deadline = Date.now() + 15000;
  for (;;) {
    const info = await (await api.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } })).json();
    if (info.subscription_count >= 1) break;
    assert.ok(Date.now() < deadline, 'the inbox never polled');
    await new Promise((r) => setTimeout(r, 50));
  }
  await api.trigger(channel, 'approval-requested', { approval: 501, document: 'PO-2024-0042', amount: '1200.50' });
  await page.waitForSelector('li[data-approval="501"] button[data-decision="approved"]', WAIT);
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-approvals.png') });
  await page.click('li[data-approval="501"] button[data-decision="approved"]');
  await page.waitForSelector('li[data-approval="501"] .decided-approved', WAIT);
  assert.equal(await page.textContent('li[data-approval="501"] .decided'), ' approved');

  const { messages } = await (await api.get({ path: `/channels/${channel}/messages` })).json();
  assert.deepEqual(
    messages.map((m) => [m.event, m.data]),
    [
      ['approval-requested', '{"approval":501,"document":"PO-2024-0042","amount":"1200.50"}'],
      ['approval-decided', '{"approval":501,"decision":"approved"}'],
    ],
  );
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('team chat: two browsers see each other online, typing, messages, and history on join', { timeout: 60000 }, async () => {
  const ctxA = await browser.newContext({ viewport: { width: 820, height: 640 } });
  const ctxB = await browser.newContext({ viewport: { width: 820, height: 640 } });
  try {
    const alice = await newPage(ctxA);
    await alice.goto(`${crier.url}/demo/chat?name=Alice&id=alice`);
    await alice.waitForSelector('li.member[data-user-id="alice"]', WAIT);
    await alice.fill('#text', 'Order 1002 is paid');
    await alice.press('#text', 'Enter');
    await alice.waitForSelector('.message', WAIT);

    const bob = await newPage(ctxB);
    await bob.goto(`${crier.url}/demo/chat?name=Bob&id=bob`);
    // History on join: Alice's message, which was sent before Bob opened the page.
    await bob.waitForSelector('.message', WAIT);
    assert.deepEqual(await bob.$$eval('.message', (d) => d.map((x) => x.textContent)), ['AliceOrder 1002 is paid']);
    // Presence, both ways.
    await alice.waitForSelector('li.member[data-user-id="bob"]', WAIT);
    assert.deepEqual(await bob.$$eval('li.member', (l) => l.map((x) => x.textContent)), ['Alice', 'Bob (you)']);
    // Typing indicator over client events.
    await bob.type('#text', 'Thanks');
    await alice.waitForFunction(() => document.getElementById('typing').textContent === 'Bob is typing…', null, WAIT);
    await bob.press('#text', 'Enter');
    await alice.waitForFunction(() => document.querySelectorAll('.message').length === 2, null, WAIT);
    await bob.waitForFunction(() => document.querySelectorAll('.message').length === 2, null, WAIT);
    const want = ['AliceOrder 1002 is paid', 'BobThanks'];
    assert.deepEqual(await alice.$$eval('.message', (d) => d.map((x) => x.textContent)), want);
    assert.deepEqual(await bob.$$eval('.message', (d) => d.map((x) => x.textContent)), want);
    await alice.screenshot({ path: path.join(ARTIFACTS, 'demo-chat.png') });
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});

test('[demo] enabled = false: no demo pages or endpoints', { timeout: 30000 }, async () => {
  const off = await startServer({ config: '[demo]\nenabled = false\n' });
  try {
    for (const p of ['/demo', '/demo/orders', '/demo/chat', '/demo/pusher.min.js', '/demo/token?user=8']) {
      assert.equal((await fetch(`${off.url}${p}`)).status, 404, p);
    }
    assert.equal((await fetch(`${off.url}/js/crier-resume.js`)).status, 200, 'the resume add-on is not part of the demo');
  } finally {
    await off.stop();
  }
});
