'use strict';
// The crash scenario for the crier-resume.js add-on (tests 41 and 42):
//
// A pusher-js client reaches Crier through a TCP proxy whose gate the test controls. A
// publisher keeps publishing numbered messages through the HTTP API and remembers which
// were acknowledged. Crier is killed with SIGKILL; the gate is closed so the client cannot
// come back yet; Crier is restarted on the same port and data directory; the publisher
// gets N more messages acknowledged while the client is away; the gate opens, pusher-js
// reconnects and resubscribes by itself. Without the gate the messages published between
// the restart and the resubscribe would depend on pusher-js's retry timing; with it, the
// scenario is the same every run.

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const Pusher = require('pusher');
const { startServer } = require('./server');
const { freePort } = require('./proc');
const { PusherJs, connect, subscribe, disconnect, waitForState, waitUntil, framesOf } = require('./client');

/**
 * A TCP proxy to 127.0.0.1:target with a gate. While the gate is closed, new connections
 * are held unanswered (as behind a network outage), and go through when it opens: the
 * client's pending reconnect then completes at once. (Refusing them instead sends
 * pusher-js into its backoff, about 15 s before it tries again.)
 */
async function gateProxy(target) {
  let open = true;
  const held = [];
  const pairs = new Set();
  const link = (down) => {
    if (down.destroyed) return;
    const up = net.connect(target, '127.0.0.1');
    const pair = { down, up };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    for (const s of [down, up]) {
      s.on('error', end);
      s.on('close', end);
    }
    down.pipe(up);
    up.pipe(down);
  };
  const server = net.createServer((down) => {
    if (open) return link(down);
    down.pause();
    down.on('error', () => down.destroy());
    held.push(down);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const cut = () => {
    for (const { down, up } of [...pairs]) {
      down.destroy();
      up.destroy();
    }
  };
  return {
    port: server.address().port,
    open() {
      open = true;
      for (const down of held.splice(0)) link(down);
    },
    close() {
      open = false;
    },
    /** Cuts every connection through the proxy (a network drop; the server stays up). */
    dropAll: cut,
    shutdown() {
      open = false;
      cut();
      for (const down of held.splice(0)) down.destroy();
      return new Promise((r) => server.close(r));
    },
  };
}

/** Fetches /js/crier-resume.js from Crier (what a page would load) and applies it. */
async function loadAddOn(server) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crier-resume-'));
  const res = await fetch(`${server.url}/js/crier-resume.js`);
  if (res.status !== 200) throw new Error(`GET /js/crier-resume.js answered ${res.status}`);
  const file = path.join(dir, 'crier-resume.js');
  fs.writeFileSync(file, await res.text());
  const crierResume = require(file);
  crierResume(PusherJs);
  return crierResume;
}

function sdkAt(port) {
  return new Pusher({ appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(port), useTLS: false });
}

/**
 * Publishes "0", "1", ... on `channel` until stopped, one every 10 ms (a steady stream
 * that stays well within the channel's history while the client is away); a failed
 * publish (server down) is followed by the next number. `acked` lists the numbers the
 * server acknowledged.
 */
function startPublisher(sdk, channel) {
  const acked = [];
  let stopped = false;
  let next = 0;
  const waiters = [];
  const loop = (async () => {
    while (!stopped) {
      const n = next++;
      const pace = new Promise((r) => setTimeout(r, 10));
      try {
        await sdk.trigger(channel, 'entry', String(n));
        acked.push(n);
        for (const w of [...waiters]) if (w.check()) waiters.splice(waiters.indexOf(w), 1);
      } catch (_) {
        /* not acknowledged: the server is down */
      }
      await pace;
    }
  })();
  return {
    acked,
    /** Resolves once `count` more messages than now are acknowledged. */
    more(count) {
      const target = acked.length + count;
      return new Promise((resolve) => {
        const w = { check: () => (acked.length >= target ? (resolve(), true) : false) };
        waiters.push(w);
      });
    },
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

/**
 * The subscriber of the scenario as pusher-js in this process: subscribes to `channel`
 * and records the numbers it gets ('GAP' for a crier:gap).
 */
function nodeSubscriber() {
  let client;
  const received = [];
  const resubscribed = [];
  return {
    async start(crier, wsPort, channel) {
      client = await connect(crier, { wsPort }, { label: 'resumer' });
      const ch = await subscribe(client, channel);
      // pusher-js JSON-decodes data: "7" arrives as 7.
      ch.bind('entry', (d) => received.push(Number(d)));
      ch.bind('crier:gap', () => received.push('GAP'));
      ch.bind('pusher:subscription_succeeded', () => resubscribed.push(true));
    },
    received: async () => received,
    resubscriptions: async () => resubscribed.length,
    waitState: (states, timeout) => waitForState(client, states, { timeout }),
    describe: async () => framesOf(client),
    get client() {
      return client;
    },
    stop: () => client && disconnect(client),
  };
}

/**
 * Runs the crash scenario with `sub` (default: pusher-js in this process) and returns
 * what it got and what was acknowledged.
 * @returns {{received: Array<number|'GAP'>, acked: number[], ackedWhileAway: number[], sub}}
 */
async function killScenario({ sub = nodeSubscriber(), channel = 'ledger', away = 20 } = {}) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'crier-resume-data-'));
  // History covers the whole run, so a gap can only come from a lost message.
  const opts = { port, dataDir, extraArgs: ['--history-max-messages', '100000'] };
  let crier = await startServer(opts);
  const proxy = await gateProxy(port);
  let publisher;
  try {
    await sub.start(crier, proxy.port, channel);
    publisher = startPublisher(sdkAt(port), channel);
    await publisher.more(away);
    await waitUntil(async () => (await sub.received()).length >= away, { label: `${away} live messages`, describe: sub.describe });

    proxy.close();
    await crier.kill();
    await sub.waitState(['connecting', 'unavailable'], 10000);
    crier = await startServer(opts);
    const before = publisher.acked.length;
    await publisher.more(away);
    const ackedWhileAway = publisher.acked.slice(before);
    proxy.open();
    await sub.waitState(['connected'], 20000);
    await waitUntil(async () => (await sub.resubscriptions()) >= 1, { label: 'the resubscription', describe: sub.describe });
    // Live again: some more, then stop and wait for the last acknowledged one.
    await publisher.more(away);
    await publisher.stop();
    const last = publisher.acked[publisher.acked.length - 1];
    await waitUntil(async () => (await sub.received()).includes(last), { label: `message ${last}`, timeout: 10000, describe: sub.describe });
    return { received: await sub.received(), acked: publisher.acked, ackedWhileAway, sub };
  } finally {
    if (publisher) await publisher.stop();
    await sub.stop();
    await proxy.shutdown();
    await crier.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

module.exports = { gateProxy, loadAddOn, sdkAt, startPublisher, killScenario, nodeSubscriber };
