'use strict';
// The scenario of tests/41 with stock pusher-js alone (no crier-resume.js): it
// resubscribes without `since`, so the messages acknowledged while it was away never
// arrive. This is what the add-on fixes; if this test ever fails, the add-on's test
// proves nothing.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { killScenario } = require('../lib/resume');

test('without the add-on, stock pusher-js loses what was published while it was away', { timeout: 90000 }, async () => {
  const { received, ackedWhileAway } = await killScenario();
  const got = new Set(received);
  const lost = ackedWhileAway.filter((n) => !got.has(n));
  assert.deepEqual(lost, ackedWhileAway, 'every message acknowledged while the client was away is lost');
  assert.ok(lost.length >= 20);
});
