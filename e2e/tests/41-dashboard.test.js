'use strict';
// The dashboard in headless Chromium (playwright-core): with some traffic on the server
// (pusher-js clients on a public and a presence channel, SDK publishes), the page shows
// live counts, the chart, the busiest channels and a presence channel's members; a test
// event sent from its form arrives on the page's own SSE subscription and at a pusher-js
// subscriber. The screenshot is saved as e2e/artifacts/dashboard.png.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { startServer } = require('../lib/server');
const { sdkFor, channelAuth } = require('../lib/auth');
const { connect, subscribe, subscribeExpectingError, waitForEvent, waitUntil, disconnectAll } = require('../lib/client');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(__dirname, '..', 'artifacts');
const WAIT_MS = 20000;

function presenceAuth(sdk, user) {
  return {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          callback(null, channelAuth(sdk, socketId, channelName, { id: user, info: { name: user } }));
        } catch (e) {
          callback(e, null);
        }
      },
    },
  };
}

test('the dashboard shows live state and a test event sent from its form arrives', { timeout: 90000 }, async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  const server = await startServer();
  t.after(() => server.stop());
  const sdk = sdkFor(server);
  t.after(() => disconnectAll());

  // Traffic: two presence members, subscribers on public channels.
  const clients = [];
  for (const user of ['alice', 'bob']) {
    const c = await connect(server, presenceAuth(sdk, user));
    await subscribe(c, 'presence-lobby');
    await subscribe(c, 'news');
    clients.push(c);
  }
  const watcher = await connect(server);
  const watched = await subscribe(watcher, 'dashboard-test');
  await subscribe(watcher, 'news');
  // One refused subscription (a forged signature), for the errors panel.
  const forger = await connect(server, {
    channelAuthorization: { customHandler: (_, callback) => callback(null, { auth: `app-key:${'0'.repeat(64)}` }) },
  });
  await subscribeExpectingError(forger, 'private-vault');

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${server.url}/dashboard`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
  await page.waitForSelector('body[data-live="dashboard-test"]', { timeout: WAIT_MS });

  // The page's SSE stream and the pusher-js watcher are both on the test channel.
  await waitUntil(async () => {
    const res = await sdk.get({ path: '/channels/dashboard-test', params: { info: 'subscription_count' } });
    return (await res.json()).subscription_count === 2;
  }, { timeout: WAIT_MS, label: 'the page subscribed to dashboard-test' });

  // Publishes for the chart, until the server has sampled a non-zero rate.
  let n = 0;
  await waitUntil(async () => {
    await sdk.trigger('news', 'tick', { n: ++n });
    const res = await fetch(`${server.url}/dashboard/api/overview`);
    const o = await res.json();
    return o.chart.filter((p) => p.in > 0).length >= 4 && o.messages.in_per_sec > 0;
  }, { timeout: WAIT_MS, label: 'a sampled message rate' });
  await page.waitForFunction(() => Number(document.body.dataset.chartPoints) >= 4, null, { timeout: WAIT_MS });

  // Send a test event from the form.
  const marker = `from chromium ${Date.now()}`;
  const atWatcher = waitForEvent(watched, 'dashboard-check', { client: watcher, timeout: WAIT_MS });
  await page.fill('#send-event', 'dashboard-check');
  await page.fill('#send-data', JSON.stringify({ marker }));
  await page.click('#send-button');
  const arrived = page.locator('#live-log li[data-event="dashboard-check"] .data');
  await arrived.first().waitFor({ timeout: WAIT_MS });
  assert.deepEqual(JSON.parse(await arrived.first().textContent()), { marker });
  await page.waitForFunction(
    () => document.getElementById('send-result').textContent === 'published dashboard-check to dashboard-test',
    null,
    { timeout: WAIT_MS },
  );
  const { data } = await atWatcher;
  assert.deepEqual(data, { marker });

  // Live counts and the busiest channels, once a refresh has seen the page's own SSE
  // stream (the first one ran before the page subscribed).
  await page.waitForFunction(
    () => {
      const sse = document.querySelector('#conn-sse b');
      return sse !== null && sse.textContent === '1';
    },
    null,
    { timeout: WAIT_MS },
  );
  assert.equal(await page.textContent('#conn-ws b'), '4');
  assert.equal(await page.textContent('#conn-xhr b'), '0');
  assert.equal(await page.textContent('#channels'), '3');
  assert.equal(await page.textContent('#subscriptions'), '7');
  const chips = await page.$$eval('#apps .chip', (els) => els.map((e) => e.textContent));
  assert.deepEqual(chips, ['news (3)', 'dashboard-test (2)', 'presence-lobby (2, 2 users)']);

  // Presence members of a channel, by clicking it.
  await page.click('#apps button.chip[data-channel="presence-lobby"]');
  await page.waitForFunction(() => document.querySelectorAll('#members-list li').length === 2, null, { timeout: WAIT_MS });
  assert.deepEqual(await page.$$eval('#members-list li', (els) => els.map((e) => e.textContent)), ['alice', 'bob']);
  assert.equal(await page.textContent('#members-summary'), 'presence-lobby: 2 members, 2 subscriptions');

  // Errors by kind: the refused subscription, and nothing that counted nothing.
  const errors = await page.$$eval('#errors tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  assert.deepEqual(errors, [['crier_client_errors_total{kind="subscription_error"}', '1', '1']]);

  assert.deepEqual(pageErrors, []);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
});
