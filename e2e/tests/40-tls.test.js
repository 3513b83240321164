'use strict';
// TLS: the server gets a certificate made by the test (openssl: a CA and a leaf for
// 127.0.0.1 signed by it) through --tls-cert/--tls-key. pusher-js with forceTLS: true,
// the pusher SDK with useTLS: true and an SSE client all work over TLS when they trust
// that CA (lib/tls-clients.js, run with NODE_EXTRA_CA_CERTS), a client that does not
// trust it is refused, and a certificate replaced on disk is served after SIGHUP.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const https = require('node:https');
const { execFileSync, spawn } = require('node:child_process');
const { startServer } = require('../lib/server');
const { waitUntil } = require('../lib/client');

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA in `dir` (ca.pem, ca.key). */
function makeCa(dir) {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Crier e2e CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'], dir);
  return path.join(dir, 'ca.pem');
}

/** A leaf for 127.0.0.1 signed by the CA: `${name}.pem`, `${name}.key`. */
function makeLeaf(dir, name) {
  fs.writeFileSync(path.join(dir, `${name}.ext`), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`], dir);
  return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
}

function runClients(port, caFile) {
  const env = { ...process.env, NODE_EXTRA_CA_CERTS: caFile, E2E_TLS_PORT: String(port) };
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'lib', 'tls-clients.js')], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`TLS clients did not finish in 30 s; stderr: ${err}`));
    }, 30000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`TLS clients failed (exit ${code}): ${err}`));
      resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
}

/** The common name of the certificate a new TLS connection is shown. */
function servedName(port, ca) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port, ca, servername: undefined }, () => {
      const cn = sock.getPeerCertificate().subject.CN;
      sock.end();
      resolve(cn);
    });
    sock.setTimeout(5000, () => sock.destroy(new Error('TLS handshake timed out')));
    sock.on('error', reject);
  });
}

function get(url, options = {}) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ...options, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

test('pusher-js (forceTLS), the pusher SDK (useTLS) and SSE over TLS; reload on SIGHUP', { timeout: 60000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crier-e2e-tls-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const caFile = makeCa(dir);
  const ca = fs.readFileSync(caFile);
  const first = makeLeaf(dir, 'first');
  const served = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
  fs.copyFileSync(first.cert, served.cert);
  fs.copyFileSync(first.key, served.key);

  const server = await startServer({ extraArgs: ['--tls-cert', served.cert, '--tls-key', served.key] });
  t.after(() => server.stop());
  assert.equal(server.tls, true, `banner: ${server.stdout()}`);
  // The banner's later lines may arrive after the first one.
  await waitUntil(() => /WebSocket \(Pusher\): wss:\/\/127\.0\.0\.1:\d+\/app\/app-key/.test(server.stdout()), {
    label: 'the wss:// line of the banner',
    describe: () => server.stdout(),
  });

  const result = await runClients(server.port, caFile);
  assert.match(result.pusherJsSocketUrl, new RegExp(`^wss://127\\.0\\.0\\.1:${server.port}/app/app-key\\?`));
  assert.equal(result.sseStatus, 200);
  assert.equal(result.sseContentType, 'text/event-stream');
  assert.equal(result.triggerStatus, 200);
  assert.deepEqual(result.pusherJs, { text: 'over tls' });
  assert.equal(result.sse.channel, 'tls-channel');
  assert.equal(result.sse.event, 'greeting');
  assert.deepEqual(JSON.parse(result.sse.data), { text: 'over tls' });

  // A client that does not trust the test CA is refused; one that does gets an answer.
  await assert.rejects(get(`${server.url}/health`), (e) => /self.signed|unable to (get|verify)|UNABLE_TO/i.test(`${e.code} ${e.message}`));
  assert.deepEqual(await get(`${server.url}/health`, { ca }), { status: 200, body: 'ok\n' });

  // Replace the certificate on disk and send SIGHUP: new connections get the new one.
  assert.equal(await servedName(server.port, ca), 'first');
  const second = makeLeaf(dir, 'second');
  fs.copyFileSync(second.cert, served.cert);
  fs.copyFileSync(second.key, served.key);
  process.kill(server.pid, 'SIGHUP');
  await waitUntil(() => server.stderr().includes('TLS certificate reloaded on SIGHUP'), {
    label: 'the SIGHUP reload log line',
    describe: () => server.stderr(),
  });
  assert.equal(await servedName(server.port, ca), 'second');
  assert.deepEqual(await get(`${server.url}/health`, { ca }), { status: 200, body: 'ok\n' });
});

test('a certificate and key that do not match stop the start with an error naming the key', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crier-e2e-tls-'));
  try {
    makeCa(dir);
    const a = makeLeaf(dir, 'a');
    const b = makeLeaf(dir, 'b');
    await assert.rejects(
      startServer({ extraArgs: ['--tls-cert', a.cert, '--tls-key', b.key] }),
      /crier: error: server\.tls_key: the key in .*b\.key does not belong to the certificate in .*a\.pem/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
