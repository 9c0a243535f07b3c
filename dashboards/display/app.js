// stockwire live display: plain browser JavaScript, no build step. Connects to the broker that served
// this page over MQTT-over-WebSocket with a `display` credential and renders what the topics say
// (CONTRACT section 2): retained stock per warehouse, link status, alerts.
/* global mqtt */
// biome-ignore lint/suspicious/noRedundantUseStrict: index.html loads this as a classic script, not a module: without it the code runs sloppy
'use strict';

(() => {
  const MAX_ROWS = 40; // stock rows shown per warehouse; the filter reaches the rest
  const MAX_ALERTS = 20;
  const RATE_SECONDS = 60;
  const CHANGED_MS = 1500; // a changed row is highlighted this long
  const COLORS = ['#58a6ff', '#3fb950', '#d29922', '#bc8cff', '#ff7b72', '#39c5cf'];
  const SESSION_KEY = 'stockwire.display.credential';

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c); // strings become text nodes: nothing from the wire is parsed as HTML
    return e;
  };

  const state = {
    config: null,
    client: null,
    connected: false,
    /** wh → { status, skus: Map, shelf: Map<sku, Map<location, qty>>, rate: number[] } */
    warehouses: new Map(),
    alerts: [],
    filter: '',
    rateEpoch: Math.floor(Date.now() / 1000),
  };

  function warehouse(wh) {
    let w = state.warehouses.get(wh);
    if (!w) {
      w = { status: null, skus: new Map(), shelf: new Map(), rate: new Array(RATE_SECONDS).fill(0) };
      state.warehouses.set(wh, w);
    }
    return w;
  }

  // ---- rendering, coalesced to one pass per frame ------------------------------------------------
  let scheduled = false;
  function render() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      renderWarehouses();
      renderAlerts();
    });
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
  }

  function renderWarehouses() {
    const root = $('warehouses');
    const names = [...state.warehouses.keys()].sort();
    if (names.length === 0) {
      root.replaceChildren(el('p', { class: 'more' }, state.connected ? 'waiting for stock…' : 'not connected'));
      return;
    }
    const now = Date.now();
    root.replaceChildren(
      ...names.map((wh) => {
        const w = state.warehouses.get(wh);
        const link = w.status ? w.status.central : 'unknown';
        const stale = !state.connected || link === 'offline';
        let note = '';
        if (!state.connected) note = 'display disconnected: last known values';
        // at central `offline` means the edge is gone; on an edge, that the edge lost central
        else if (link === 'offline')
          note = `stale: ${state.config.role === 'edge' ? 'no link to central' : 'edge offline'} since ${fmtTime(w.status.since)}; last known values`;
        else if (w.status && w.status.backlog > 0) note = `backlog ${w.status.backlog} events`;
        const skus = [...w.skus.keys()]
          .filter((s) => s.toLowerCase().includes(state.filter))
          .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
        const rows = skus.slice(0, MAX_ROWS).map((sku) => {
          const s = w.skus.get(sku);
          const shelf = w.shelf.get(sku);
          const onShelf = shelf ? [...shelf.values()].reduce((a, b) => a + b, 0) : null;
          const age = now - s.changedAt;
          const changed = age < CHANGED_MS;
          const onHand = el('td', { class: `onhand${s.onHand < 0 ? ' neg' : ''}` }, String(s.onHand));
          if (changed && s.delta)
            onHand.append(
              el(
                'span',
                { class: `delta ${s.delta > 0 ? 'up' : 'down'}` },
                `${s.delta > 0 ? '+' : '−'}${Math.abs(s.delta)}`,
              ),
            );
          const row = el(
            'tr',
            { 'data-sku': sku, class: changed ? 'changed' : '' },
            el('td', {}, sku),
            onHand,
            el('td', { class: 'reserved' }, String(s.reserved)),
            el('td', { class: `available${s.available < 0 ? ' neg' : ''}` }, String(s.available)),
            el('td', { class: 'shelf' }, onShelf === null ? '–' : String(onShelf)),
          );
          // rows are rebuilt on every render, so the highlight fades by age rather than by a CSS animation
          if (changed) row.style.background = `rgba(31, 111, 235, ${(0.35 * (1 - age / CHANGED_MS)).toFixed(2)})`;
          return row;
        });
        const table = el(
          'table',
          {},
          el(
            'thead',
            {},
            el(
              'tr',
              {},
              el('th', {}, 'sku'),
              el('th', {}, 'on hand'),
              el('th', {}, 'reserved'),
              el('th', {}, 'available'),
              el('th', { title: 'latest shelf sensor readings, summed over locations' }, 'on shelf'),
            ),
          ),
          el('tbody', {}, ...rows),
        );
        const more =
          skus.length > MAX_ROWS
            ? el('div', { class: 'more' }, `${skus.length - MAX_ROWS} more — type in the filter to find them`)
            : '';
        return el(
          'article',
          { class: 'card', 'data-wh': wh, 'data-link': link, 'data-stale': String(stale) },
          el(
            'header',
            {},
            el('h2', {}, wh),
            el('span', { class: 'link' }, link === 'unknown' ? 'no status yet' : `link ${link}`),
          ),
          el('p', { class: 'note' }, note),
          w.skus.size === 0 ? el('p', { class: 'more' }, 'no stock yet') : table,
          more,
        );
      }),
    );
  }

  function renderAlerts() {
    const list = $('alerts');
    if (state.alerts.length === 0) return;
    list.replaceChildren(
      ...state.alerts.map((a) =>
        el('li', { 'data-kind': a.kind }, el('time', {}, fmtTime(a.at)), el('b', {}, `${a.wh} ${a.kind}`), a.message),
      ),
    );
  }

  // ---- rate chart ---------------------------------------------------------------------------------
  function shiftRates() {
    const nowSec = Math.floor(Date.now() / 1000);
    const steps = Math.min(RATE_SECONDS, nowSec - state.rateEpoch);
    if (steps <= 0) return;
    for (const w of state.warehouses.values()) {
      w.rate.splice(0, steps);
      for (let i = 0; i < steps; i++) w.rate.push(0);
    }
    state.rateEpoch = nowSec;
  }

  function drawRate() {
    shiftRates();
    const canvas = $('rate');
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const names = [...state.warehouses.keys()].sort();
    // the current second is still filling: plot completed seconds only
    const series = names.map((wh) => state.warehouses.get(wh).rate.slice(0, RATE_SECONDS - 1));
    const max = Math.max(1, ...series.flat());
    const pad = { l: 28, r: 4, t: 6, b: 14 };
    g.strokeStyle = '#26313d';
    g.fillStyle = '#8b98a5';
    g.font = '10px system-ui, sans-serif';
    g.lineWidth = 1;
    for (const frac of [0, 0.5, 1]) {
      const y = pad.t + (height - pad.t - pad.b) * (1 - frac);
      g.beginPath();
      g.moveTo(pad.l, y);
      g.lineTo(width - pad.r, y);
      g.stroke();
      g.fillText(String(Math.round(max * frac)), 2, y + 3);
    }
    g.fillText('-60 s', pad.l, height - 2);
    g.fillText('now', width - pad.r - 18, height - 2);
    series.forEach((points, i) => {
      g.strokeStyle = COLORS[i % COLORS.length];
      g.lineWidth = 1.5;
      g.beginPath();
      points.forEach((v, x) => {
        const px = pad.l + ((width - pad.l - pad.r) * x) / (RATE_SECONDS - 2);
        const py = pad.t + (height - pad.t - pad.b) * (1 - v / max);
        if (x === 0) g.moveTo(px, py);
        else g.lineTo(px, py);
      });
      g.stroke();
    });
    $('legend').replaceChildren(
      ...names.map((wh, i) => {
        const last = series[i][series[i].length - 1] || 0;
        const swatch = el('i', {});
        swatch.style.background = COLORS[i % COLORS.length];
        return el('span', {}, swatch, `${wh} ${last}/s`);
      }),
    );
  }

  // ---- MQTT ------------------------------------------------------------------------------------
  function filters() {
    const c = state.config;
    if (c.role === 'edge')
      return [
        `wh/${c.warehouse}/stock/#`,
        `wh/${c.warehouse}/shelf/#`,
        `wh/${c.warehouse}/status`,
        `alerts/${c.warehouse}/#`,
      ];
    return ['wh/+/stock/#', 'wh/+/shelf/#', 'wh/+/status', 'alerts/#'];
  }

  function onMessage(topic, payload, packet) {
    let msg;
    try {
      msg = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      return; // not ours to show
    }
    const parts = topic.split('/');
    if (parts[0] === 'wh' && parts[2] === 'stock' && parts.length === 4) {
      const w = warehouse(parts[1]);
      const prev = w.skus.get(parts[3]);
      if (prev && prev.version >= msg.version) return; // an older retained copy
      const delta = prev ? msg.onHand - prev.onHand : 0;
      w.skus.set(parts[3], {
        onHand: msg.onHand,
        reserved: msg.reserved,
        available: msg.available,
        version: msg.version,
        changedAt: packet.retain ? 0 : Date.now(),
        delta,
      });
      if (!packet.retain) {
        shiftRates();
        w.rate[RATE_SECONDS - 1]++;
      }
    } else if (parts[0] === 'wh' && parts[2] === 'shelf' && parts.length === 5) {
      const w = warehouse(parts[1]);
      let byLocation = w.shelf.get(parts[4]);
      if (!byLocation) {
        byLocation = new Map();
        w.shelf.set(parts[4], byLocation);
      }
      byLocation.set(parts[3], msg.qty);
    } else if (parts[0] === 'wh' && parts[2] === 'status' && parts.length === 3) {
      warehouse(parts[1]).status = msg;
    } else if (parts[0] === 'alerts') {
      state.alerts.unshift({
        kind: msg.kind || parts[2],
        wh: msg.wh || parts[1],
        message: msg.message || '',
        at: msg.at || new Date().toISOString(),
      });
      state.alerts.length = Math.min(state.alerts.length, MAX_ALERTS);
    }
    render();
  }

  function setConn(s, text) {
    const pill = $('conn');
    pill.dataset.state = s;
    pill.textContent = text;
  }

  function connect(credential) {
    const c = state.config;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.hostname}:${c.wsPort}/mqtt`;
    const client = mqtt.connect(url, {
      username: credential.username,
      password: credential.password,
      // a display's client id must start with its id (CONTRACT 5); a suffix lets several tabs connect
      clientId: `${credential.username}-web-${Math.random().toString(16).slice(2, 10)}`,
      clean: true,
      reconnectPeriod: 2000,
      connectTimeout: 8000,
      protocolVersion: 4,
    });
    state.client = client;
    $('login').hidden = true;
    $('main').hidden = false;
    $('logout').hidden = !!c.credential;
    client.on('connect', () => {
      state.connected = true;
      setConn('live', `live as ${credential.username}`);
      client.subscribe(filters(), { qos: 1 });
      render();
    });
    client.on('message', onMessage);
    const lost = () => {
      if (!state.connected) return;
      state.connected = false;
      setConn('reconnecting', 'reconnecting…');
      render();
    };
    client.on('close', lost);
    client.on('offline', lost);
    client.on('error', (err) => {
      // CONNACK 4 (bad credentials) or 5 (not authorised) will not get better by retrying
      if (err && (err.code === 4 || err.code === 5 || err.code === 134 || err.code === 135)) {
        client.end(true);
        sessionStorage.removeItem(SESSION_KEY);
        setConn('refused', 'refused');
        showLogin(c.credential ? 'the demo credential was refused' : 'the broker refused this username or password');
      }
    });
  }

  function showLogin(message) {
    $('main').hidden = true;
    $('login').hidden = false;
    $('logout').hidden = true;
    $('login-error').textContent = message || '';
    setConn('connecting', 'not connected');
  }

  async function main() {
    let config;
    try {
      const res = await fetch('config.json', { cache: 'no-store' });
      config = await res.json();
    } catch (err) {
      setConn('refused', 'no config');
      document.body.append(el('p', { class: 'error' }, `cannot load config.json: ${err.message}`));
      return;
    }
    state.config = config;
    for (const wh of config.warehouses || []) warehouse(wh);
    $('scope').textContent =
      config.role === 'edge' ? `warehouse ${config.warehouse} (edge)` : 'all warehouses (central)';
    document.title = config.role === 'edge' ? `stockwire live — ${config.warehouse}` : 'stockwire live';
    $('filter').addEventListener('input', (e) => {
      state.filter = e.target.value.trim().toLowerCase();
      render();
    });
    $('login').addEventListener('submit', (e) => {
      e.preventDefault();
      const form = new FormData(e.target);
      const credential = { username: String(form.get('username')), password: String(form.get('password')) };
      // per tab, gone when it closes; never in localStorage
      sessionStorage.setItem(SESSION_KEY, JSON.stringify(credential));
      connect(credential);
    });
    $('logout').addEventListener('click', () => {
      sessionStorage.removeItem(SESSION_KEY);
      if (state.client) state.client.end(true);
      state.connected = false;
      showLogin('');
    });
    setInterval(drawRate, 1000);
    setInterval(render, 250); // lets change highlights fade and stale notes follow the clock
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    } catch {
      saved = null;
    }
    const credential = config.credential || saved;
    if (credential) connect(credential);
    else showLogin('');
    render();
    drawRate();
  }

  main();
})();
