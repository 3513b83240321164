// crier-resume: loss-free resume for stock pusher-js (and laravel-echo) on Crier.
//
// pusher-js resubscribes by itself after a reconnect, but it does not say what it last
// got, so whatever was published while it was away is lost. Crier gives every message
// an `id` and replays what followed it when a pusher:subscribe carries it as `since`.
// pusher-js's decoder drops that `id`, so this add-on watches the raw frames of every
// WebSocket pusher-js opens (through Pusher.Runtime.createWebSocket), keeps the last id
// per channel and per Pusher instance, and adds it as `since` to each pusher:subscribe
// the instance sends again. When Crier's history no longer reaches back to that id, the
// channel gets a `crier:gap` event first: bind it like any event
// (channel.bind('crier:gap', ...), or Echo's .listen('.crier:gap', ...)).
//
// Covers the WebSocket transport only; pusher-js's HTTP fallbacks (xhr_streaming,
// xhr_polling) resubscribe as before, without `since`.

// Per Pusher instance: channel name -> id of the last message received on it.
var crierResumeStates = new WeakMap();

function crierResumeState(pusher) {
  var state = crierResumeStates.get(pusher);
  if (!state) {
    state = { last: new Map() };
    crierResumeStates.set(pusher, state);
  }
  return state;
}

/**
 * Patches the pusher-js class in place (every instance, also those laravel-echo creates)
 * and returns it. Call it once, before creating the first Pusher instance.
 */
function crierResume(Pusher) {
  if (!Pusher || !Pusher.Runtime || !Pusher.prototype || typeof Pusher.prototype.send_event !== 'function') {
    throw new Error('crierResume(Pusher): pass the pusher-js class (load pusher-js first)');
  }
  if (Pusher.__crierResume) return Pusher;
  Pusher.__crierResume = true;

  // Per open socket: its socket_id, and the instance it belongs to once known.
  var bySocketId = new Map();

  function onFrame(socket, raw) {
    if (typeof raw !== 'string') return;
    var frame;
    try {
      frame = JSON.parse(raw);
    } catch (e) {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    if (frame.event === 'pusher:connection_established') {
      try {
        var data = typeof frame.data === 'string' ? JSON.parse(frame.data) : frame.data;
        socket.socketId = data.socket_id;
        bySocketId.set(socket.socketId, socket);
      } catch (e) {
        /* not ours to judge: pusher-js reports a bad handshake */
      }
      return;
    }
    if (typeof frame.id === 'string' && frame.id !== '' && typeof frame.channel === 'string') {
      (socket.owner ? socket.owner.last : socket.pending).set(frame.channel, frame.id);
    }
  }

  var createWebSocket = Pusher.Runtime.createWebSocket;
  Pusher.Runtime.createWebSocket = function (url) {
    var ws = createWebSocket.apply(this, arguments);
    var socket = { socketId: null, owner: null, pending: new Map() };
    // pusher-js handles frames in `onmessage`, and subscribes from inside its handling
    // of the handshake: the frame must be seen before that, so the handler it sets is
    // wrapped. The listener covers a client that uses addEventListener instead; whichever
    // runs first for a frame reads it.
    var last = null;
    var see = function (e) {
      if (e === last) return;
      last = e;
      onFrame(socket, e.data);
    };
    interceptOnMessage(ws, see);
    ws.addEventListener('message', see);
    ws.addEventListener('close', function () {
      if (socket.socketId && bySocketId.get(socket.socketId) === socket) bySocketId.delete(socket.socketId);
    });
    return ws;
  };

  function interceptOnMessage(ws, see) {
    var proto = ws;
    var desc;
    while (proto && !(desc = Object.getOwnPropertyDescriptor(proto, 'onmessage'))) proto = Object.getPrototypeOf(proto);
    if (desc && !desc.configurable && proto === ws) return;
    var slot = desc && !desc.set ? desc.value : undefined;
    var wrap = function (fn) {
      return typeof fn !== 'function' ? fn : function (e) {
        see(e);
        return fn.apply(this, arguments);
      };
    };
    Object.defineProperty(ws, 'onmessage', {
      configurable: true,
      enumerable: true,
      get: function () {
        return desc && desc.get ? desc.get.call(ws) : slot;
      },
      set: function (fn) {
        // A native WebSocket keeps the handler behind its own setter; other
        // implementations read the property when they dispatch.
        if (desc && desc.set) desc.set.call(ws, wrap(fn));
        else slot = wrap(fn);
      },
    });
  }

  // The instance's current socket is the one whose handshake gave its socket_id.
  function claim(pusher, state) {
    var socket = bySocketId.get(pusher.connection && pusher.connection.socket_id);
    if (!socket || socket.owner === state) return;
    socket.owner = state;
    socket.pending.forEach(function (id, channel) {
      state.last.set(channel, id);
    });
    socket.pending.clear();
  }

  var sendEvent = Pusher.prototype.send_event;
  Pusher.prototype.send_event = function (name, data, channel) {
    var state = crierResumeState(this);
    claim(this, state);
    if (name === 'pusher:subscribe' && data && typeof data.channel === 'string' && data.since === undefined) {
      var since = state.last.get(data.channel);
      if (since) data = Object.assign({}, data, { since: since });
    } else if (name === 'pusher:unsubscribe' && data) {
      // A later subscribe starts afresh, as it would without the add-on.
      state.last.delete(data.channel);
    }
    return sendEvent.call(this, name, data, channel);
  };
  return Pusher;
}

/** The id of the last message per channel of a Pusher instance, as {channel: id}. */
crierResume.lastIds = function (pusher) {
  var out = {};
  crierResumeState(pusher).last.forEach(function (id, channel) {
    out[channel] = id;
  });
  return out;
};

/**
 * Resumes the given channels from these ids ({channel: id}, e.g. lastIds() kept in
 * sessionStorage across a page reload): their next subscribe carries them as `since`.
 */
crierResume.resumeFrom = function (pusher, ids) {
  var state = crierResumeState(pusher);
  Object.keys(ids || {}).forEach(function (channel) {
    if (typeof ids[channel] === 'string' && ids[channel] !== '') state.last.set(channel, ids[channel]);
  });
};
