// switchboard inspector: the live event stream (Server-Sent Events), the connections, routes
// and functions' environments (polled JSON), four charts, and the DynamoDB tables with their
// items a page at a time. Every piece of data is inserted with textContent.
'use strict';

const $ = (id) => document.getElementById(id);
const MAX_EVENTS = 500;
const HISTORY = 300; // samples, one a second: five minutes
const PAGE = 25; // items per page of a table
const TABLES_EVERY = 5; // ticks between two reads of the table list (it counts every table)
let dropped = 0;
let source = null;
let ticks = 0;
const samples = [];
// The table whose items are shown: its key names, the start token of each page seen so far
// (`starts[0]` is the table's start), the page shown, and the latest request (older answers
// are ignored).
const view = { name: null, keys: [], starts: [null], page: 0, ticket: 0 };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

// Appends a cell per `[class, value]` pair.
function appendCells(tr, cells) {
  for (const [cls, v] of cells) tr.appendChild(el('td', v, cls));
}

function time(ms) {
  return ms ? new Date(ms).toISOString().slice(11, 23) : '';
}

function describe(ev) {
  switch (ev.type) {
    case 'connected': return `connected ${ev.connection_id} from ${ev.source_ip}`;
    case 'disconnected': return `disconnected ${ev.connection_id} code ${ev.code} ${ev.reason}`;
    case 'frame': return `frame in ${ev.connection_id} (${ev.size} B) ${ev.binary ? '[binary]' : ev.text}${ev.truncated ? '…' : ''}`;
    case 'route': return `route ${ev.route ?? '(none)'} selected for ${ev.connection_id}: ${ev.expression} = ${ev.selection ?? '(not JSON)'}`;
    case 'invocation': return `invocation ${ev.route} → ${ev.function} ${ev.status ?? ev.error} in ${ev.duration_ms.toFixed(1)} ms (request ${ev.request_id})`;
    case 'management': return `@connections ${ev.operation} ${ev.connection_id} by ${ev.caller}: ${ev.status}${ev.text ? ' ' + ev.text : ''}`;
    case 'function_log': return `log ${ev.function} ${ev.request_id}: ${ev.line}`;
    case 'dropped': return `dropped ${ev.count} events (the page fell behind)`;
    default: return JSON.stringify(ev);
  }
}

function addEvent(ev) {
  const li = el('li', `${time(ev.time_ms)} ${describe(ev)}`, ev.type);
  li.dataset.type = ev.type;
  if (ev.type === 'dropped') {
    dropped += ev.count;
    $('dropped').textContent = String(dropped);
  }
  if ((ev.type === 'invocation' && ev.failed) ) li.classList.add('error');
  if (ev.type === 'management' && ev.status === 410) li.classList.add('gone');
  if (ev.type === 'invocation') {
    li.addEventListener('click', () => {
      const detail = $('detail');
      const pretty = (s) => { try { return JSON.stringify(JSON.parse(s), null, 2); } catch { return s; } };
      detail.textContent = `event:\n${pretty(ev.event)}\n\nresponse:\n${ev.response ? pretty(ev.response) : ev.error}`;
      detail.hidden = false;
    });
  }
  const list = $('events');
  list.insertBefore(li, list.firstChild);
  while (list.childElementCount > MAX_EVENTS) list.lastChild.remove();
}

function subscribe() {
  if (source) source.close();
  const q = new URLSearchParams();
  for (const k of ['connection', 'route', 'function']) {
    const v = $('f-' + k).value.trim();
    if (v) q.set(k, v);
  }
  source = new EventSource('/_switchboard/stream?' + q.toString());
  source.onopen = () => { $('status').textContent = 'live'; };
  source.onerror = () => { $('status').textContent = 'reconnecting…'; };
  source.onmessage = (m) => addEvent(JSON.parse(m.data));
}

async function call(method, id, body) {
  const r = await fetch('/_switchboard/api/connections/' + encodeURIComponent(id), {
    method, body, headers: { 'X-Switchboard': '1' },
  });
  return r.status;
}

const CONNECTION_CELLS = [
  'id', 'source-ip', 'user-agent', 'connected', 'last-active', 'messages-in', 'messages-out', 'queued',
];

function connectionCells(c) {
  return [
    c.id, c.source_ip, c.user_agent ?? '', time(c.connected_at_ms), time(c.last_active_ms),
    c.messages_in, c.messages_out, c.queued_bytes,
  ];
}

function connectionRow(id) {
  const tr = el('tr');
  tr.dataset.id = id;
  for (const cls of CONNECTION_CELLS) tr.appendChild(el('td', null, cls));
  const form = el('form');
  const input = el('input');
  input.placeholder = 'message';
  input.setAttribute('aria-label', 'message to ' + id);
  const send = el('button', 'Post');
  send.type = 'submit';
  form.append(input, send);
  form.addEventListener('submit', (e) => { e.preventDefault(); call('POST', id, input.value).then(() => { input.value = ''; }); });
  const tdForm = el('td'); tdForm.appendChild(form); tr.appendChild(tdForm);
  const del = el('button', 'Disconnect');
  del.type = 'button';
  del.addEventListener('click', () => call('DELETE', id));
  const tdDel = el('td'); tdDel.appendChild(del); tr.appendChild(tdDel);
  return tr;
}

// Rows are updated in place, so the counters stay live while a message is being typed into
// one (its focus is kept); rows of new connections are added, those of closed ones removed.
async function refreshConnections() {
  const data = await (await fetch('/_switchboard/api/connections')).json();
  const body = $('connections').tBodies[0];
  const open = new Set(data.connections.map((c) => c.id));
  const rows = new Map();
  for (const tr of [...body.rows]) {
    if (open.has(tr.dataset.id)) rows.set(tr.dataset.id, tr); else tr.remove();
  }
  data.connections.forEach((c, i) => {
    const tr = rows.get(c.id) ?? connectionRow(c.id);
    connectionCells(c).forEach((v, j) => {
      const text = String(v);
      if (tr.cells[j].textContent !== text) tr.cells[j].textContent = text;
    });
    if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] ?? null);
  });
}

async function refreshRoutes() {
  const data = await (await fetch('/_switchboard/api/routes')).json();
  $('expression').textContent = data.selection_expression;
  const fmt = (v) => (v === null || v === undefined ? '' : v.toFixed(1));
  $('routes').tBodies[0].replaceChildren(...data.routes.map((r) => {
    const tr = el('tr');
    for (const v of [r.route, r.function, r.invocations, r.errors, fmt(r.p50_ms), fmt(r.p90_ms), fmt(r.p99_ms)]) tr.appendChild(el('td', v));
    return tr;
  }));
}

async function refreshFunctions() {
  const data = await (await fetch('/_switchboard/api/functions')).json();
  $('functions-view').hidden = data.functions.length === 0;
  $('functions').tBodies[0].replaceChildren(...data.functions.map((f) => {
    const tr = el('tr');
    tr.dataset.function = f.function;
    appendCells(tr, [
      ['function', f.function], ['environments', f.environments], ['idle', f.idle], ['busy', f.busy],
      ['starting', f.starting], ['cold-starts', f.cold_starts], ['restarts', f.restarts],
      ['invocations', f.invocations],
    ]);
    return tr;
  }));
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function refreshTables() {
  const data = await (await fetch('/_switchboard/api/tables')).json();
  $('tables-section').hidden = !data.enabled;
  if (!data.enabled) return;
  $('tables').tBodies[0].replaceChildren(...data.tables.map((t) => {
    const tr = el('tr');
    tr.dataset.table = t.name;
    tr.classList.toggle('selected', t.name === view.name);
    const open = el('button', t.name, 'table-link');
    open.type = 'button';
    open.addEventListener('click', () => openTable(t));
    const name = el('td', null, 'table');
    name.appendChild(open);
    tr.appendChild(name);
    appendCells(tr, [
      ['partition-key', t.partition_key ?? ''], ['sort-key', t.sort_key ?? ''],
      ['items', t.item_count], ['size', size(t.size_bytes)],
    ]);
    return tr;
  }));
}

function openTable(t) {
  view.name = t.name;
  view.keys = [t.partition_key, t.sort_key].filter((k) => k);
  view.starts = [null];
  view.page = 0;
  for (const tr of $('tables').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.table === t.name);
  loadPage();
}

// A DynamoDB number as a JS number when that loses nothing, else as its text.
function exact(n) {
  return String(Number(n)) === n ? Number(n) : n;
}

// DynamoDB JSON ({"S": "a"}, {"N": "1"}, {"M": {...}}, ...) as plain JSON values.
function plain(av) {
  const [type, v] = Object.entries(av)[0] ?? [];
  switch (type) {
    case 'S': case 'B': return v;
    case 'N': return exact(v);
    case 'BOOL': return v;
    case 'NULL': return null;
    case 'SS': case 'BS': return v;
    case 'NS': return v.map(exact);
    case 'L': return v.map(plain);
    case 'M': return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
    default: return av;
  }
}

async function loadPage() {
  const ticket = ++view.ticket;
  $('table-prev').disabled = true;
  $('table-next').disabled = true;
  const q = new URLSearchParams({ limit: String(PAGE) });
  const start = view.starts[view.page];
  if (start) q.set('start', start);
  const r = await fetch(`/_switchboard/api/tables/${encodeURIComponent(view.name)}/items?${q}`);
  const data = await r.json();
  if (ticket !== view.ticket) return;
  $('table-view').hidden = false;
  $('table-name').textContent = view.name;
  const error = $('table-error');
  error.hidden = r.ok;
  error.textContent = r.ok ? '' : data.message;
  const items = r.ok ? data.items : [];
  view.starts.length = view.page + 1;
  if (r.ok && data.next) view.starts.push(data.next);
  const first = view.page * PAGE;
  $('table-page').textContent = items.length
    ? `page ${view.page + 1}, items ${first + 1} to ${first + items.length}`
    : `page ${view.page + 1}, no items`;
  $('table-prev').disabled = view.page === 0;
  $('table-next').disabled = view.starts.length <= view.page + 1;
  const table = $('items');
  table.tHead.rows[0].replaceChildren(...[...view.keys, 'item'].map((k) => el('th', k)));
  table.tBodies[0].replaceChildren(...items.map((item) => {
    const tr = el('tr');
    for (const k of view.keys) {
      const v = item[k] ? plain(item[k]) : '';
      tr.appendChild(el('td', typeof v === 'string' ? v : JSON.stringify(v), 'key'));
    }
    tr.appendChild(el('td', JSON.stringify(plain({ M: item })), 'item'));
    return tr;
  }));
}

function draw(id, values) {
  const canvas = $(id);
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = '#3b5bdb';
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / Math.max(1, HISTORY - 1)) * canvas.width;
    const y = canvas.height - 12 - (v / max) * (canvas.height - 14);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = '#6b7385';
  ctx.font = '10px sans-serif';
  ctx.fillText(`now ${values.length ? values[values.length - 1].toFixed(0) : 0}, max ${max.toFixed(0)}`, 2, canvas.height - 1);
}

async function refreshStats() {
  const s = await (await fetch('/_switchboard/api/stats')).json();
  samples.push(s);
  while (samples.length > HISTORY + 1) samples.shift();
  const rate = (key) => samples.slice(1).map((x, i) => {
    const dt = (x.time_ms - samples[i].time_ms) / 1000;
    return dt > 0 ? (x[key] - samples[i][key]) / dt : 0;
  });
  draw('chart-open', samples.map((x) => x.open_connections));
  draw('chart-frames', rate('frames_in'));
  draw('chart-deliveries', rate('deliveries'));
  draw('chart-invocations', rate('invocations'));
}

function tick() {
  const refreshes = [refreshConnections(), refreshRoutes(), refreshFunctions(), refreshStats()];
  if (ticks++ % TABLES_EVERY === 0) refreshes.push(refreshTables());
  Promise.all(refreshes)
    .catch(() => { $('status').textContent = 'server unreachable'; });
}

$('filters').addEventListener('submit', (e) => { e.preventDefault(); subscribe(); });
$('table-prev').addEventListener('click', () => {
  if (view.page > 0) { view.page -= 1; loadPage(); }
});
$('table-next').addEventListener('click', () => {
  if (view.starts.length > view.page + 1) { view.page += 1; loadPage(); }
});
subscribe();
tick();
setInterval(tick, 1000);
