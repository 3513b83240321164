'use strict';
// A tiny application backend for pusher-js: signs channel subscriptions and user sign-ins
// with the official `pusher` SDK, like a real app's /pusher/auth route would.
//
// Routes (POST, application/x-www-form-urlencoded, as pusher-js's ajax transport sends):
//   /pusher/auth       socket_id, channel_name [, user_id, user_name, bad=1, deny=1]
//   /pusher/user-auth  socket_id [, user_id, user_name, bad=1]
// `bad=1` signs with a wrong secret (the server must reject it); `deny=1` answers 403.
//
// Extra fields (user_id, ...) reach the endpoint through pusher-js's
// `channelAuthorization.params` / `userAuthentication.params`.

const http = require('node:http');
const Pusher = require('pusher');

function sdkFor(server, overrides = {}) {
  return new Pusher({
    appId: server.appId,
    key: server.key,
    secret: server.secret,
    host: '127.0.0.1',
    port: String(server.port),
    useTLS: false,
    ...overrides,
  });
}

/** Channel authorization for pusher-js's `customHandler` / `authorizer` options. */
function channelAuth(sdk, socketId, channelName, user) {
  if (channelName.startsWith('presence-')) {
    if (!user) throw new Error(`presence channel ${channelName} needs a user`);
    return sdk.authorizeChannel(socketId, channelName, {
      user_id: user.id,
      user_info: user.info || { name: `User ${user.id}` },
    });
  }
  return sdk.authorizeChannel(socketId, channelName);
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Starts the endpoint on 127.0.0.1:0.
 * @returns {Promise<{url, channelEndpoint, userEndpoint, requests, close}>}
 */
async function startAuthServer(server) {
  const good = sdkFor(server);
  const bad = sdkFor(server, { secret: `${server.secret}-wrong` });
  const requests = [];
  const sockets = new Set();

  const httpServer = http.createServer(async (req, res) => {
    try {
      const body = await readBody(req);
      const p = new URLSearchParams(body);
      const entry = { path: req.url, params: Object.fromEntries(p), status: 200 };
      requests.push(entry);
      const reply = (status, obj) => {
        entry.status = status;
        entry.response = obj;
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(obj));
      };
      if (req.method !== 'POST') return reply(405, { error: 'POST only' });
      const socketId = p.get('socket_id');
      const sdk = p.get('bad') === '1' ? bad : good;
      const user = p.get('user_id')
        ? { id: p.get('user_id'), info: { name: p.get('user_name') || `User ${p.get('user_id')}` } }
        : null;
      if (p.get('deny') === '1') return reply(403, { error: 'denied by test' });
      if (req.url === '/pusher/auth') {
        return reply(200, channelAuth(sdk, socketId, p.get('channel_name'), user));
      }
      if (req.url === '/pusher/user-auth') {
        if (!user) return reply(403, { error: 'no user_id' });
        return reply(200, sdk.authenticateUser(socketId, { id: user.id, user_info: user.info }));
      }
      return reply(404, { error: 'not found' });
    } catch (e) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: String(e && e.message) }));
    }
  });
  httpServer.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const { port } = httpServer.address();
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    channelEndpoint: `${url}/pusher/auth`,
    userEndpoint: `${url}/pusher/user-auth`,
    requests,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => httpServer.close(() => resolve()));
    },
  };
}

module.exports = { startAuthServer, sdkFor, channelAuth };
