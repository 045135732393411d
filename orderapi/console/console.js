// Ordo's web console: plain JavaScript, no build step, served by orderapi
// (orderapi/console, compiled in). It talks to the same HTTP API as any
// client: POST /api/orders, GET /api/orders/{id} and /events, GET /healthz,
// and the live board follows GET /api/orders/changes (Server-Sent Events,
// read with fetch so that the API key can go in a header). The key is kept
// in sessionStorage: for this tab's session only. Nothing from the server is
// put into the page as HTML: text only.
'use strict';

const STATUSES = ['Pending', 'Paid', 'Approved', 'PaymentFailed', 'Rejected', 'Refunded'];
const PER_COLUMN = 25;
const PRESETS = {
  ok: [['PIZZA', 'Pizza', 12.5, 2]],
  soldout: [['SOLD-OUT', 'Sold-out special', 9.5, 1]],
  over: [['BANQUET', 'Banquet for sixty', 600, 1]],
};

const state = {
  key: sessionStorage.getItem('ordo.key') || '',
  orders: new Map(),      // order_id -> the latest change seen (highest version)
  lastId: null,           // the last event id: Last-Event-ID on reconnect
  abort: null,
  restart: false,
  shown: null,            // the order whose page is open
  renderQueued: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function headers(extra) {
  const h = Object.assign({}, extra);
  if (state.key) h.Authorization = 'Bearer ' + state.key;
  return h;
}

async function api(path, opts) {
  const o = Object.assign({ cache: 'no-store' }, opts);
  o.headers = headers(o.headers);
  const r = await fetch(path, o);
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { raw: text }; }
  if (r.status === 401) askKey('the key was refused');
  return { status: r.status, body };
}

function errorText(res) {
  return res.body && res.body.error ? res.body.error.message : 'HTTP ' + res.status;
}

function money(v) { return Number(v).toFixed(2); }
function when(us) { return new Date(us / 1000).toLocaleTimeString(); }

// ------------------------------------------------------------ the key

function askKey(why) {
  $('app').hidden = true;
  $('keypanel').hidden = false;
  $('keyerror').textContent = why || '';
  if (state.abort) state.abort.abort();
}

// Asks /healthz (open) whether keys are on, and /api/whoami what the key
// may do: no request the page makes on its own is refused.
async function start() {
  const health = await api('/healthz');
  const keys = health.body && health.body.api_keys;
  if (keys && !state.key) { askKey(''); return; }
  const who = await api('/api/whoami');
  if (who.status !== 200) { askKey(who.status === 401 ? 'the key was refused' : errorText(who)); return; }
  $('keypanel').hidden = true;
  $('app').hidden = false;
  $('forget').hidden = !state.key;
  const w = who.body;
  $('who').textContent = w.scope === 'anyone' ? 'no API key needed here'
    : w.scope === 'staff' ? 'staff key (kept for this session only)'
    : 'customer ' + w.customer_id + "'s key (kept for this session only)";
  if (w.scope === 'customer') {   // it orders and sees for its own customer alone
    $('customer').value = w.customer_id;
    $('customer').readOnly = true;
  }
  follow();
}

// ------------------------------------------------------- live changes

function setLive(on, text) {
  const p = $('live');
  p.textContent = text || (on ? 'live' : 'reconnecting');
  p.className = on ? 'pill' : 'pill off';
}

async function follow() {
  const ctrl = new AbortController();
  state.abort = ctrl;
  const extra = state.lastId ? { 'Last-Event-ID': state.lastId } : {};
  const url = state.lastId ? '/api/orders/changes' : '/api/orders/changes?recent=300';
  try {
    const r = await fetch(url, { headers: headers(extra), signal: ctrl.signal, cache: 'no-store' });
    if (r.status === 401) { askKey('the key was refused'); return; }
    if (r.status !== 200) throw new Error('HTTP ' + r.status);
    setLive(true);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        onEvent(parseEvent(block));
      }
    }
  } catch (e) {
    if (e.name === 'AbortError' && !state.restart) return;
  }
  if (state.restart) { state.restart = false; follow(); return; }
  setLive(false);
  setTimeout(follow, 3000);
}

function parseEvent(block) {
  const ev = { event: 'message', data: '' };
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const k = line.indexOf(':');
    const field = k < 0 ? line : line.slice(0, k);
    let value = k < 0 ? '' : line.slice(k + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'id') ev.id = value;
    else if (field === 'event') ev.event = value;
    else if (field === 'data') ev.data += (ev.data ? '\n' : '') + value;
  }
  return ev;
}

function onEvent(ev) {
  if (ev.id) state.lastId = ev.id;
  if (ev.event === 'order') {
    const o = JSON.parse(ev.data);
    const known = state.orders.get(o.order_id);
    if (!known || o.version > known.version) {
      o.fresh = true;
      state.orders.set(o.order_id, o);
      queueRender();
      if (state.shown === o.order_id) showOrder(o.order_id);
    }
  } else if (ev.event === 'reset') {   // the server no longer holds what we missed: start over
    state.orders.clear();
    state.lastId = null;
    state.restart = true;
    queueRender();
    state.abort.abort();
  } else if (ev.event === 'dropped') {   // too slow: the stream ends; we reconnect from our last id
    setLive(false, 'dropped: ' + JSON.parse(ev.data).reason);
  }
}

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => { state.renderQueued = false; renderBoard(); });
}

function renderBoard() {
  const board = $('board');
  const columns = STATUSES.map((s) => {
    const orders = [...state.orders.values()].filter((o) => o.status === s)
      .sort((a, b) => b.applied_at - a.applied_at);
    const col = el('div', { class: 'column', 'data-status': s },
      el('h3', {}, s + ' ', el('span', { class: 'count' }, '(' + orders.length + ')')));
    for (const o of orders.slice(0, PER_COLUMN)) {
      const card = el('div', { class: 'card s-' + o.status + (o.fresh ? ' fresh' : ''), 'data-order-id': o.order_id,
                               'data-status': o.status, title: 'open order ' + o.order_id },
        el('div', {}, el('span', { class: 'id' }, o.order_id.slice(0, 8)), ' · ', money(o.amount)),
        el('div', { class: 'meta' }, o.customer_id + ' · v' + o.version + ' · ' + when(o.applied_at)));
      card.addEventListener('click', () => showOrder(o.order_id));
      col.append(card);
      o.fresh = false;
    }
    return col;
  });
  board.replaceChildren(...columns);
}

// ---------------------------------------------------------- order page

async function showOrder(id) {
  state.shown = id;
  $('detail').hidden = false;
  $('detail-id').textContent = id;
  const [now, hist] = await Promise.all([api('/api/orders/' + id), api('/api/orders/' + id + '/events')]);
  if (state.shown !== id) return;
  const st = $('detail-state');
  if (now.status === 200) {
    const o = now.body;
    st.replaceChildren(el('div', {}, 'Status ', el('b', { 'data-status': o.status }, o.status), ' · version ' + o.version +
      ' · ' + o.customer_id + ' at ' + o.restaurant_id + ' · amount ' + money(o.amount)),
      el('div', { class: 'meta' }, o.order_items.map((i) => i.quantity + ' × ' + i.name + ' (' + i.code + ') at ' +
        money(i.unit_price)).join(', ')));
  } else {
    st.replaceChildren(el('span', { class: 'error' }, errorText(now)));
  }
  const tl = $('timeline');
  if (hist.status !== 200) { tl.replaceChildren(el('li', { class: 'error' }, errorText(hist))); return; }
  let prev = null;
  tl.replaceChildren(...hist.body.events.map((e) => {
    const gap = prev === null ? '' : ' (+' + ((e.created_at - prev) / 1000).toFixed(1) + ' ms)';
    prev = e.created_at;
    return el('li', { 'data-type': e.type },
      el('span', { class: 'type' }, e.type), ' · v' + e.version + ' · position ' + e.position + ' · ' +
        (e.service || '?') + ' · ' + e.time + gap,
      el('details', {}, el('summary', {}, 'data'), el('pre', {}, JSON.stringify(e.data, null, 2))));
  }));
}

// -------------------------------------------------------------- health

async function refreshHealth() {
  let res;
  try { res = await api('/healthz'); } catch (e) { res = { status: 0, body: null }; }
  const h = res.body || {};
  const flag = (name, v) => el('tr', {}, el('td', {}, name), el('td', { class: v ? 'ok' : 'bad' }, v ? 'up' : 'down'));
  const rows = [
    el('tr', {}, el('th', {}, 'status'), el('th', { class: h.status === 'ok' ? 'ok' : 'bad', id: 'health-status' },
      h.status || 'unreachable')),
    flag('event store', h.eventstore), flag('read model (orderquery)', h.orderquery), flag('database', h.database),
    flag('bus (NATS)', h.bus), flag('live change feed', h.changes_feed),
  ];
  if (h.outbox_backlog !== undefined) {
    rows.push(el('tr', {}, el('td', {}, 'outbox backlog'), el('td', {}, h.outbox_backlog + ' events')));
    rows.push(el('tr', {}, el('td', {}, 'orders needing a hand'),
      el('td', { class: h.stuck_orders ? 'bad' : 'ok' }, String(h.stuck_orders))));
  }
  const table = el('table', {}, ...rows);
  const parts = [table];
  if (h.consumers && h.consumers.length) {
    parts.push(el('h3', {}, 'Consumers (JetStream)'));
    parts.push(el('table', {}, el('tr', {}, el('th', {}, 'durable'), el('th', {}, 'pending'), el('th', {}, 'unacked'),
      el('th', {}, 'parked')), ...h.consumers.map((c) => el('tr', {}, el('td', {}, c.name), el('td', {}, c.pending),
      el('td', {}, c.ack_pending), el('td', { class: c.parked ? 'bad' : '' }, c.parked)))));
  }
  $('health').replaceChildren(...parts);
}

// --------------------------------------------------------- order form

function addItem(code, name, price, qty) {
  const input = (cls, value, type) => el('input', { class: cls, value: value, type: type || 'text', required: true });
  const remove = el('button', { type: 'button', title: 'remove this item' }, '×');
  const row = el('tr', {}, el('td', {}, input('code', code)), el('td', {}, input('name', name)),
    el('td', {}, input('price', price, 'number')), el('td', {}, input('qty', qty, 'number')), el('td', {}, remove));
  row.querySelector('.price').step = '0.01';
  row.querySelector('.price').min = '0.01';
  row.querySelector('.qty').min = '1';
  remove.addEventListener('click', () => row.remove());
  $('items').tBodies[0].append(row);
}

function preset(name) {
  $('items').tBodies[0].replaceChildren();
  for (const it of PRESETS[name]) addItem(...it);
}

async function placeOrder(ev) {
  ev.preventDefault();
  const items = [...$('items').tBodies[0].rows].map((r) => ({
    code: r.querySelector('.code').value, name: r.querySelector('.name').value,
    unit_price: Number(r.querySelector('.price').value), quantity: Number(r.querySelector('.qty').value),
  }));
  const body = { customer_id: $('customer').value, restaurant_id: $('restaurant').value, order_items: items };
  const key = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
  $('place').disabled = true;
  try {
    const res = await api('/api/orders', {
      method: 'POST', body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
    });
    const note = $('placed');
    if (res.status === 201) {
      note.className = 'note';
      note.textContent = 'placed ' + res.body.order_id + ' (' + money(res.body.amount) + ')';
      note.setAttribute('data-order-id', res.body.order_id);
    } else {
      note.className = 'error';
      note.textContent = res.status + ': ' + errorText(res);
    }
  } finally {
    $('place').disabled = false;
  }
}

// ---------------------------------------------------------------- wire

document.addEventListener('DOMContentLoaded', () => {
  $('keyform').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.key = $('key').value.trim();
    sessionStorage.setItem('ordo.key', state.key);
    $('key').value = '';
    start();
  });
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem('ordo.key');
    state.key = '';
    askKey('');
  });
  $('orderform').addEventListener('submit', placeOrder);
  $('additem').addEventListener('click', () => addItem('', '', 1, 1));
  for (const b of document.querySelectorAll('[data-preset]')) b.addEventListener('click', () => preset(b.dataset.preset));
  $('detail-close').addEventListener('click', () => { state.shown = null; $('detail').hidden = true; });
  preset('ok');
  renderBoard();
  refreshHealth();
  setInterval(refreshHealth, 5000);
  start();
});
