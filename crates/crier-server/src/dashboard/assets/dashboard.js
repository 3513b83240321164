'use strict';
// Crier's dashboard: polls /dashboard/api/* every two seconds, draws the message rates
// on a canvas, publishes test events and listens to the test channel over SSE.
// No framework and no build step; every value from the server is set as text, never
// as HTML.

(function () {
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);
  let apps = [];
  let live = null; // { source, appKey, channel }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text != null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function fmt(n) {
    if (n == null || Number.isNaN(n)) return '–';
    if (Math.abs(n) >= 100 || Number.isInteger(n)) return Math.round(n).toLocaleString('en');
    return n.toFixed(1);
  }

  function uptime(secs) {
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    return `up ${d ? `${d}d ` : ''}${h}h ${m}m`;
  }

  async function getJson(path) {
    const res = await fetch(path, { headers: { accept: 'application/json' }, cache: 'no-store' });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `${path}: HTTP ${res.status}`);
    return body;
  }

  function setStatus(text, bad) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('bad', !!bad);
  }

  // ---- overview -----------------------------------------------------------------------

  function renderOverview(o) {
    $('version').textContent = o.version;
    $('uptime').textContent = uptime(o.uptime_secs);
    $('tls').hidden = !o.tls;
    const by = $('connections');
    by.replaceChildren();
    let total = 0;
    for (const [transport, n] of Object.entries(o.connections)) {
      total += n;
      const li = el('li');
      li.id = `conn-${transport}`;
      li.append(el('span', transport), document.createTextNode(' '), el('b', fmt(n)));
      by.append(li);
    }
    $('connections-total').textContent = fmt(total);
    $('channels').textContent = fmt(o.channels);
    $('subscriptions').textContent = fmt(o.subscriptions);
    $('rate-in').textContent = fmt(o.messages.in_per_sec);
    $('rate-out').textContent = fmt(o.messages.out_per_sec);
    $('published-total').textContent = fmt(o.messages.published_total);
    $('delivered-total').textContent = fmt(o.messages.delivered_total);
    drawChart(o.chart);
    const body = $('errors').tBodies[0];
    body.replaceChildren();
    const counted = o.errors.filter((e) => e.total > 0);
    for (const e of counted) {
      const tr = el('tr');
      tr.append(el('td', e.series), el('td', fmt(e.recent)), el('td', fmt(e.total)));
      body.append(tr);
    }
    $('errors-empty').hidden = counted.length > 0;
  }

  function drawChart(points) {
    const canvas = $('chart');
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 900;
    const h = canvas.clientHeight || 180;
    canvas.width = w * ratio;
    canvas.height = h * ratio;
    const g = canvas.getContext('2d');
    g.scale(ratio, ratio);
    g.clearRect(0, 0, w, h);
    const pad = { l: 44, r: 8, t: 8, b: 20 };
    const max = Math.max(1, ...points.map((p) => Math.max(p.in, p.out)));
    const top = niceCeil(max);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#68717f';
    g.strokeStyle = '#dde2ea';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ((h - pad.t - pad.b) * i) / 4;
      g.beginPath();
      g.moveTo(pad.l, y + 0.5);
      g.lineTo(w - pad.r, y + 0.5);
      g.stroke();
      g.fillText(fmt((top * (4 - i)) / 4), 4, y + 4);
    }
    document.body.dataset.chartPoints = String(points.length);
    if (points.length === 0) return;
    const t0 = points[0].t;
    const t1 = Math.max(points[points.length - 1].t, t0 + 1);
    const x = (t) => pad.l + ((w - pad.l - pad.r) * (t - t0)) / (t1 - t0);
    const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - v / top);
    g.fillText(`${Math.round((t1 - t0) / 1000)} s ago`, pad.l, h - 4);
    g.fillText('now', w - pad.r - g.measureText('now').width, h - 4);
    for (const [key, color] of [['in', '#2b5fd9'], ['out', '#1a9b6c']]) {
      g.strokeStyle = color;
      g.lineWidth = 2;
      g.beginPath();
      points.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p[key])) : g.moveTo(x(p.t), y(p[key]))));
      g.stroke();
    }
  }

  function niceCeil(v) {
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // ---- apps and channels --------------------------------------------------------------

  function renderApps(list) {
    const changed = JSON.stringify(list.map((a) => a.id)) !== JSON.stringify(apps.map((a) => a.id));
    apps = list;
    const body = $('apps').tBodies[0];
    body.replaceChildren();
    for (const app of list) {
      const tr = el('tr');
      const name = el('td');
      name.append(el('b', app.id), el('div', `key ${app.key}${app.enabled ? '' : ' (disabled)'}`, 'muted'));
      const busiest = el('td');
      if (app.busiest.length === 0) busiest.append(el('span', 'no occupied channels', 'muted'));
      for (const c of app.busiest) {
        const label = `${c.channel} (${c.subscription_count}${c.presence ? `, ${c.user_count} users` : ''})`;
        const chip = el(c.presence ? 'button' : 'span', label, 'chip');
        chip.dataset.channel = c.channel;
        if (c.presence) {
          chip.type = 'button';
          chip.title = 'show members';
          chip.addEventListener('click', () => {
            $('members-app').value = app.id;
            $('members-channel').value = c.channel;
            showMembers();
          });
        }
        busiest.append(chip);
      }
      tr.append(name, el('td', fmt(app.connections)), el('td', fmt(app.channels)), busiest);
      body.append(tr);
    }
    if (changed) {
      for (const select of [$('members-app'), $('send-app')]) {
        const keep = select.value;
        select.replaceChildren(...list.map((a) => {
          const o = el('option', `${a.id} (${a.key})`);
          o.value = a.id;
          return o;
        }));
        if (list.some((a) => a.id === keep)) select.value = keep;
      }
      listen();
    }
  }

  async function showMembers() {
    const app = $('members-app').value;
    const channel = $('members-channel').value.trim();
    const list = $('members-list');
    list.replaceChildren();
    try {
      const c = await getJson(`/dashboard/api/apps/${encodeURIComponent(app)}/channels/${encodeURIComponent(channel)}`);
      if (!c.presence) {
        $('members-summary').textContent = `${c.channel} is not a presence channel (${c.subscription_count} subscriptions)`;
        return;
      }
      $('members-summary').textContent = `${c.channel}: ${c.user_count} members, ${c.subscription_count} subscriptions`;
      for (const id of c.members) list.append(el('li', id));
    } catch (e) {
      $('members-summary').textContent = e.message;
    }
  }

  // ---- test events and the live subscription ------------------------------------------

  function listen() {
    const app = apps.find((a) => a.id === $('send-app').value);
    const channel = $('send-channel').value.trim();
    if (!app || !channel) return;
    if (live && live.appKey === app.key && live.channel === channel) return;
    if (live) live.source.close();
    $('live-channel').textContent = channel;
    if (/^(private-|presence-)/.test(channel)) {
      live = null;
      $('live-status').textContent = '(private and presence channels are not shown here)';
      return;
    }
    const url = `/app/${encodeURIComponent(app.key)}/sse?channels=${encodeURIComponent(channel)}`;
    const source = new EventSource(url);
    live = { source, appKey: app.key, channel };
    $('live-status').textContent = 'connecting…';
    source.onopen = () => {
      $('live-status').textContent = 'listening';
      document.body.dataset.live = channel;
    };
    source.onerror = () => {
      $('live-status').textContent = 'reconnecting…';
      delete document.body.dataset.live;
    };
    source.onmessage = (m) => {
      let env;
      try {
        env = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      const li = el('li');
      li.dataset.event = env.event;
      li.append(
        el('span', `${new Date().toLocaleTimeString()} `, 'muted'),
        el('span', env.event, 'ev'),
        document.createTextNode(` on ${env.channel}: `),
        el('span', typeof env.data === 'string' ? env.data : JSON.stringify(env.data), 'data'),
      );
      const log = $('live-log');
      log.prepend(li);
      while (log.children.length > 50) log.lastChild.remove();
    };
  }

  async function send(ev) {
    ev.preventDefault();
    const app = $('send-app').value;
    const body = {
      channel: $('send-channel').value.trim(),
      event: $('send-event').value.trim(),
      data: $('send-data').value,
    };
    $('send-result').textContent = 'publishing…';
    try {
      const res = await fetch(`/dashboard/api/apps/${encodeURIComponent(app)}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(body),
      });
      const answer = await res.json().catch(() => ({}));
      $('send-result').textContent = res.ok ? `published ${answer.event} to ${answer.channel}` : `refused: ${answer.error || res.status}`;
    } catch (e) {
      $('send-result').textContent = `failed: ${e.message}`;
    }
  }

  // ---- polling ------------------------------------------------------------------------

  async function refresh() {
    try {
      const [overview, list] = await Promise.all([getJson('/dashboard/api/overview'), getJson('/dashboard/api/apps')]);
      renderOverview(overview);
      renderApps(list.apps);
      setStatus(`updated ${new Date().toLocaleTimeString()}`);
      document.body.dataset.ready = 'true';
    } catch (e) {
      setStatus(e.message, true);
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('send-form').addEventListener('submit', send);
    $('members-form').addEventListener('submit', (e) => {
      e.preventDefault();
      showMembers();
    });
    $('send-app').addEventListener('change', listen);
    $('send-channel').addEventListener('change', listen);
    refresh();
    setInterval(refresh, POLL_MS);
  });
})();
