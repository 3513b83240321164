'use strict';
// Starts the real Crier binary on an ephemeral port and stops it again.
//
//   const srv = await startServer();             // default dev app
//   const srv = await startServer({ config });   // TOML text, passed with --config
//   srv.port, srv.url, srv.stderr(), await srv.stop()
//
// Binary: $CRIER_BIN, default ../target/debug/crier relative to e2e/.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const E2E_DIR = path.resolve(__dirname, '..');
const DEFAULT_BIN = path.resolve(E2E_DIR, '..', 'target', 'debug', 'crier');
const START_TIMEOUT_MS = Number(process.env.CRIER_START_TIMEOUT_MS || 20000);
const STOP_GRACE_MS = 5000;
const LOG_KEEP = 64 * 1024;

function binaryPath() {
  const p = process.env.CRIER_BIN;
  if (!p) return DEFAULT_BIN;
  return path.isAbsolute(p) ? p : path.resolve(E2E_DIR, p);
}

const DEV_APP = Object.freeze({ appId: '1', key: 'app-key', secret: 'app-secret' });

// Every server started by this process, so that a crashed test file still kills them.
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

function tail(s) {
  return s.length > LOG_KEEP ? s.slice(s.length - LOG_KEEP) : s;
}

/**
 * @param {object} [opts]
 * @param {string} [opts.config] TOML text for --config
 * @param {string[]} [opts.extraArgs] more flags after the standard ones
 * @param {object} [opts.env] extra environment variables
 * @param {boolean} [opts.udp] UDP ingest on an ephemeral port (`srv.udpPort`)
 * @param {number} [opts.port] listen on this port instead of an ephemeral one
 * @param {string} [opts.dataDir] use this data directory (kept by `stop`)
 */
async function startServer(opts = {}) {
  const bin = binaryPath();
  if (!fs.existsSync(bin)) {
    throw new Error(
      `Crier binary not found at ${bin}: build it (cargo build -p crier) or set CRIER_BIN`,
    );
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crier-e2e-'));
  const dataDir = opts.dataDir || path.join(tmp, 'data');
  // UDP ingest is off unless asked for (opts.udp): then on an ephemeral port, read back
  // from the banner as `srv.udpPort`.
  const args = ['serve', '--listen', `127.0.0.1:${opts.port || 0}`, '--data-dir', dataDir, '--udp-listen', opts.udp ? '127.0.0.1:0' : ''];
  if (opts.config != null) {
    const cfg = path.join(tmp, 'crier.toml');
    fs.writeFileSync(cfg, opts.config);
    args.push('--config', cfg);
  }
  if (opts.extraArgs) args.push(...opts.extraArgs);

  // Only CRIER_* variables that the test sets: an outer environment must not change the
  // server under test (e.g. a CRIER_LISTEN of the developer's shell).
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('CRIER_')) env[k] = v;
  }
  Object.assign(env, opts.env || {});

  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  const echo = process.env.E2E_SERVER_LOG === '1';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr = tail(stderr + d);
    if (echo) process.stderr.write(`[crier] ${d}`);
  });

  let exited = null; // { code, signal }
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      running.delete(child);
      resolve(exited);
    });
  });

  const portPromise = new Promise((resolve, reject) => {
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value);
    };
    const describe = () =>
      `\n  command: ${bin} ${args.map((a) => JSON.stringify(a)).join(' ')}` +
      `\n  stdout:\n${indent(stdout)}\n  stderr:\n${indent(stderr)}`;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new Error(`Crier did not print "listening on http://..." within ${START_TIMEOUT_MS} ms${describe()}`));
    }, START_TIMEOUT_MS);
    child.stdout.on('data', (d) => {
      stdout = tail(stdout + d);
      if (echo) process.stderr.write(`[crier:out] ${d}`);
      const m = /listening on (https?):\/\/127\.0\.0\.1:(\d+)/.exec(stdout);
      // The banner ends with the operations line; the UDP address comes before it.
      if (m && stdout.includes('health: /health')) finish(null, { scheme: m[1], port: Number(m[2]) });
    });
    child.on('error', (e) => finish(new Error(`cannot start Crier (${bin}): ${e.message}`)));
    exitPromise.then(({ code, signal }) =>
      finish(new Error(`Crier exited (code ${code}, signal ${signal}) before listening${describe()}`)),
    );
  });

  let port;
  let scheme;
  try {
    ({ port, scheme } = await portPromise);
  } catch (e) {
    await exitPromise;
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }

  const udp = /UDP ingest:\s+127\.0\.0\.1:(\d+)/.exec(stdout);
  let stopping = null;
  const server = {
    port,
    udpPort: udp ? Number(udp[1]) : null,
    host: '127.0.0.1',
    url: `${scheme}://127.0.0.1:${port}`,
    tls: scheme === 'https',
    pid: child.pid,
    dataDir,
    ...DEV_APP,
    stderr: () => stderr,
    stdout: () => stdout,
    exited: () => exited,
    stopRequested: () => stopping !== null,
    /** SIGKILL (a crash), resolving once the process is gone; keeps the data directory. */
    async kill() {
      if (!exited) child.kill('SIGKILL');
      return exitPromise;
    },
    /** SIGTERM, then SIGKILL after 5 s; removes the temporary data directory. */
    stop() {
      if (stopping) return stopping;
      stopping = (async () => {
        if (!exited) {
          child.kill('SIGTERM');
          let timer;
          const killed = new Promise((resolve) => {
            timer = setTimeout(() => {
              if (!exited) child.kill('SIGKILL');
              resolve();
            }, STOP_GRACE_MS);
          });
          await Promise.race([exitPromise, killed]);
          clearTimeout(timer);
          await exitPromise;
        }
        fs.rmSync(tmp, { recursive: true, force: true });
        return exited;
      })();
      return stopping;
    },
  };
  return server;
}

function indent(s) {
  return s
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

module.exports = { startServer, binaryPath, DEV_APP };
