'use strict';
// One Crier server (and one auth endpoint) per test file, via node:test hooks.
//
//   const ctx = useServer();          // or useServer({ config: '...toml...' })
//   test('...', async () => { ctx.server.port; ctx.sdk.trigger(...); ctx.auth.channelEndpoint });
//
// After each test every pusher-js client is disconnected; after the file the server gets
// SIGTERM (SIGKILL after 5 s). A server that died during a test fails that test with its
// stderr.

const { before, after, afterEach } = require('node:test');
const { startServer } = require('./server');
const { startAuthServer, sdkFor } = require('./auth');
const { disconnectAll } = require('./client');

function useServer(opts = {}) {
  const ctx = { server: null, sdk: null, auth: null };
  before(async () => {
    ctx.server = await startServer(opts);
    ctx.sdk = sdkFor(ctx.server);
    ctx.auth = await startAuthServer(ctx.server);
  });
  afterEach(async () => {
    await disconnectAll();
    const ex = ctx.server && ctx.server.exited();
    if (ex && !ctx.server.stopRequested()) {
      throw new Error(
        `Crier exited during the test (code ${ex.code}, signal ${ex.signal}); stderr:\n${ctx.server.stderr()}`,
      );
    }
  });
  after(async () => {
    await disconnectAll();
    if (ctx.auth) await ctx.auth.close();
    if (ctx.server) {
      const ex = await ctx.server.stop();
      if (process.env.E2E_SERVER_LOG === '1') {
        process.stderr.write(`[crier] exit: ${JSON.stringify(ex)}\n`);
      }
    }
  });
  return ctx;
}

/** Reads a JSON answer from the SDK's signed GET; on HTTP errors keeps status and body. */
async function getJson(sdk, path, params) {
  try {
    const res = await sdk.get({ path, params });
    const text = await res.text();
    try {
      return { status: res.status, body: JSON.parse(text), text };
    } catch (_) {
      return { status: res.status, body: undefined, text };
    }
  } catch (e) {
    if (e && e.status) return { status: e.status, body: safeParse(e.body), text: e.body };
    throw e;
  }
}

/** Same for POSTs (trigger, triggerBatch, ...): awaits the SDK promise. */
async function sdkJson(promise) {
  try {
    const res = await promise;
    const text = await res.text();
    return { status: res.status, body: safeParse(text), text };
  } catch (e) {
    if (e && e.status) return { status: e.status, body: safeParse(e.body), text: e.body };
    throw e;
  }
}

function safeParse(t) {
  try {
    return JSON.parse(t);
  } catch (_) {
    return undefined;
  }
}

module.exports = { useServer, getJson, sdkJson };
