'use strict';
// A private redis-server for tests of Crier clusters: started on a free port with
// nothing kept on disk, killed at the end (and when the test process exits).

const { spawn } = require('node:child_process');
const net = require('node:net');

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch (_) {
      /* already gone */
    }
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function answers(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('error', () => resolve(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.once('data', (d) => {
      sock.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
  });
}

/** Starts redis-server; resolves with {url, stop}. Retries on another port if taken. */
async function startRedis({ timeoutMs = 10000 } = {}) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    running.add(child);
    let exited = false;
    child.on('exit', () => {
      exited = true;
      running.delete(child);
    });
    const deadline = Date.now() + timeoutMs;
    while (!exited && Date.now() < deadline) {
      if (await answers(port)) {
        return {
          url: `redis://127.0.0.1:${port}`,
          stop: () =>
            new Promise((resolve) => {
              if (exited) return resolve();
              child.once('exit', () => resolve());
              child.kill('SIGKILL');
            }),
        };
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    if (!exited) throw new Error(`redis-server on ${port} did not answer within ${timeoutMs} ms`);
  }
  throw new Error('could not start redis-server on a free port');
}

module.exports = { startRedis };
