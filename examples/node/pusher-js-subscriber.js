'use strict';
// Stock pusher-js against Crier: the public `orders` channel, the staff's `presence-team`
// channel (who is online) and a typing indicator over client events. Authorization comes
// from php/auth.php (`php -S 127.0.0.1:8080 auth.php`).
//
//   npm install && node pusher-js-subscriber.js 7      # as user 7 (Alice)
//
// Prints one JSON line per thing that happens.

const Pusher = require('pusher-js');

const crier = new URL(process.env.CRIER_URL || 'http://127.0.0.1:6001');
const authUrl = process.env.AUTH_URL || 'http://127.0.0.1:8080';
const userId = process.argv[2] || '7';
const log = (line) => console.log(JSON.stringify(line));

const pusher = new Pusher(process.env.CRIER_APP_KEY || 'app-key', {
  wsHost: crier.hostname,
  wsPort: Number(crier.port),
  forceTLS: false,
  enabledTransports: ['ws'],
  cluster: 'mt1', // required by pusher-js, unused with wsHost
  channelAuthorization: {
    endpoint: `${authUrl}/pusher/auth`,
    transport: 'ajax',
    params: { user_id: userId }, // stands in for your session cookie
  },
});

// Public channel: every event published to `orders`.
pusher.subscribe('orders').bind_global((event, data) => {
  if (!event.startsWith('pusher:')) log({ channel: 'orders', event, data });
});

// Presence: the member list on joining, then joins and leaves.
const team = pusher.subscribe('presence-team');
const typing = () => team.trigger('client-typing', { user_id: userId });
team.bind('pusher:subscription_succeeded', (members) => {
  log({ channel: 'presence-team', event: 'here', members: Object.keys(members.members).sort(), me: members.me.id });
  if (members.count > 1) typing(); // say hello to whoever is already there
});
team.bind('pusher:member_added', (member) => {
  log({ channel: 'presence-team', event: 'joining', user_id: member.id, info: member.info });
  typing();
});
team.bind('pusher:member_removed', (member) => log({ channel: 'presence-team', event: 'leaving', user_id: member.id }));
// Client events go from browser to browser without your backend; Crier adds the
// sender's user_id on presence channels and never echoes them to the sender.
team.bind('client-typing', (data, metadata) => log({ channel: 'presence-team', event: 'client-typing', data, from: metadata.user_id }));

process.on('SIGTERM', () => {
  pusher.disconnect();
  process.exit(0);
});
