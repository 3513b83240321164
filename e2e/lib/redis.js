'use strict';
// A private redis-server for the tests (Crier clusters, the Redis-queue example):
// nothing kept on disk, another port tried if the one picked was taken meanwhile,
// stopped by the test (and killed when the test process exits, by lib/proc).
//
//   const redis = await startRedis();   // {port, url, stop}

const { freePort, spawnProc } = require('./proc');

const ATTEMPTS = 5;

async function startRedis() {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = spawnProc(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { label: 'redis-server' },
    );
    try {
      await proc.waitLine((l) => typeof l === 'string' && l.includes('Ready to accept connections'), 'redis-server ready');
      return { port, url: `redis://127.0.0.1:${port}`, stop: () => proc.stop() };
    } catch (e) {
      await proc.stop();
      if (attempt === ATTEMPTS) throw e;
    }
  }
}

module.exports = { startRedis };
