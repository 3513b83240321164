'use strict';
// Child processes for the tests that run the examples (PHP, Python, Node scripts) and
// their helpers (php -S, redis-server): spawned with a bounded life, stdout read as
// lines, killed when the test process exits.
//
//   const r = await runProc('php', ['udp-order.php'], { cwd, env });   // {code, stdout, stderr}
//   const p = spawnProc('python3', ['webhook_receiver.py', '0'], { cwd });
//   const line = await p.waitLine((l) => l.listening, 'the listening line');  // JSON lines
//   await p.stop();

const { spawn } = require('node:child_process');
const net = require('node:net');

const WAIT_MS = Number(process.env.E2E_WAIT_MS || 5000) * 2;
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch (_) {
      /* gone */
    }
  }
});

/** A TCP port free on 127.0.0.1 at the time of asking. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function parse(line) {
  try {
    return JSON.parse(line);
  } catch (_) {
    return line;
  }
}

/**
 * Starts a long-running process. `lines` holds its stdout lines (parsed as JSON where
 * they are JSON); `waitLine(pred)` resolves with the first line (old or new) for which
 * `pred` is true.
 */
function spawnProc(cmd, args, { cwd, env, label } = {}) {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const name = label || `${cmd} ${args.join(' ')}`;
  const lines = [];
  const waiters = [];
  let stdout = '';
  let stderr = '';
  let buffered = '';
  let exit = null;
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      live.delete(child);
      exit = { code, signal };
      resolve(exit);
      for (const w of waiters.splice(0)) w.fail(new Error(`${name} exited (${code}, ${signal}) while waiting for ${w.what}\n${describe()}`));
    }),
  );
  child.on('error', (e) => {
    for (const w of waiters.splice(0)) w.fail(new Error(`cannot run ${name}: ${e.message}`));
  });
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.on('data', (d) => {
    stdout += d;
    buffered += d;
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      const line = parse(buffered.slice(0, i));
      buffered = buffered.slice(i + 1);
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.pred(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.done(line);
        }
      }
    }
  });
  const describe = () => `  ${name}\n  stdout:\n${stdout}\n  stderr:\n${stderr}`;

  return {
    child,
    lines,
    stderr: () => stderr,
    describe,
    exited,
    waitLine(pred, what = 'a line', timeout = WAIT_MS) {
      const seen = lines.find(pred);
      if (seen !== undefined) return Promise.resolve(seen);
      if (exit) return Promise.reject(new Error(`${name} already exited while waiting for ${what}\n${describe()}`));
      return new Promise((resolve, reject) => {
        const w = { pred, what };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out after ${timeout} ms waiting for ${what}\n${describe()}`));
        }, timeout);
        w.done = (l) => {
          clearTimeout(timer);
          resolve(l);
        };
        w.fail = (e) => {
          clearTimeout(timer);
          reject(e);
        };
        waiters.push(w);
      });
    },
    /** SIGTERM, SIGKILL after 3 s. */
    async stop() {
      if (exit) return exit;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
      return exit;
    },
  };
}

/** Runs a command to its end (killed after `timeout`): {code, stdout, stderr}. */
async function runProc(cmd, args, { cwd, env, timeout = WAIT_MS } = {}) {
  const p = spawnProc(cmd, args, { cwd, env });
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeout);
  const { code, signal } = await p.exited;
  clearTimeout(timer);
  const stdout = p.lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n');
  return { code, signal, stdout, stderr: p.stderr(), describe: p.describe() };
}

module.exports = { freePort, spawnProc, runProc };
