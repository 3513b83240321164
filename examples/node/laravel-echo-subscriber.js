'use strict';
// The same as pusher-js-subscriber.js, written as a Laravel front end writes it:
// laravel-echo with the pusher broadcaster. Echo adds the `presence-` prefix for join(),
// `client-` for whisper(), and a `.` before an event name means "exactly this name".
//
//   npm install && node laravel-echo-subscriber.js 8   # as user 8 (Bob)

const Pusher = require('pusher-js');

const crier = new URL(process.env.CRIER_URL || 'http://127.0.0.1:6001');
const authUrl = process.env.AUTH_URL || 'http://127.0.0.1:8080';
const userId = process.argv[2] || '8';
const log = (line) => console.log(JSON.stringify(line));

async function main() {
  // laravel-echo 2.x ships its CommonJS entry as ES module code: load it with import().
  const { default: Echo } = await import('laravel-echo');
  const echo = new Echo({
    broadcaster: 'pusher',
    Pusher,
    key: process.env.CRIER_APP_KEY || 'app-key',
    wsHost: crier.hostname,
    wsPort: Number(crier.port),
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    channelAuthorization: { endpoint: `${authUrl}/pusher/auth`, transport: 'ajax', params: { user_id: userId } },
  });

  echo.channel('orders')
    .listen('.order-created', (data) => log({ channel: 'orders', event: 'order-created', data }))
    .listen('.order-shipped', (data) => log({ channel: 'orders', event: 'order-shipped', data }));

  const team = echo.join('team'); // presence-team
  const typing = () => team.whisper('typing', { user_id: userId }); // client-typing
  team
    .here((members) => {
      log({ channel: 'presence-team', event: 'here', members: members.map((m) => String(m.name)).sort() });
      if (members.length > 1) typing();
    })
    .joining((member) => {
      log({ channel: 'presence-team', event: 'joining', info: member });
      typing();
    })
    .leaving((member) => log({ channel: 'presence-team', event: 'leaving', info: member }))
    .listenForWhisper('typing', (data) => log({ channel: 'presence-team', event: 'client-typing', data }));

  process.on('SIGTERM', () => {
    echo.disconnect();
    process.exit(0);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
