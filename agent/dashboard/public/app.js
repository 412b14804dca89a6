// The Kizuna dashboard: the mesh as the agent serving this page sees it, streamed by Server-Sent
// Events (/events), kept for the last 10 minutes for the charts, and a playground that sends an
// image through the mesh (POST /api/infer). Every value from the mesh reaches the page as text
// (textContent, SVG attributes), never as HTML.
import { lineChart } from './charts.js';
import { $, COLORS, h, ms } from './dom.js';
import { renderModels, setUpPlayground } from './playground.js';

const WINDOW_MS = 10 * 60 * 1000;

const state = {
  mesh: '',
  self: '',
  /** node -> { status, since, health, healthAt } */
  boards: new Map(),
  /** node -> [{ t, load, temp, rate }] */
  history: new Map(),
  /** [[t, req/s]] of the whole mesh */
  throughput: [],
  /** the agent's clock minus this page's */
  skew: 0,
  source: null,
};

const serverNow = () => Date.now() + state.skew;

// ---- health reports (docs/OPERATIONS.md, mesh/health.ts) ---------------------------------------

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Load %, temperature, memory, rate, p95 and warnings from a health report (missing ones undefined). */
export function figures(h) {
  if (!h || typeof h !== 'object') return {};
  const mem = h.memory ?? {};
  const inf = h.inference ?? {};
  const total = num(mem.total_bytes);
  const used = num(mem.used_bytes);
  // The slowest model with traffic in the period: what an operator looks for first.
  const p95s = (Array.isArray(inf.models) ? inf.models : []).map((m) => num(m?.p95_ms)).filter((v) => v !== undefined);
  const t = h.throttle;
  const warnings = t ? [t.under_voltage && 'under-voltage', t.throttled && 'throttled', t.freq_capped && 'frequency capped', t.soft_temp_limit && 'soft temperature limit'].filter(Boolean) : [];
  return {
    load: num(h.cpu?.total_pct),
    temp: num(h.temperature_c),
    used: used === undefined ? undefined : used / 1048576,
    memPct: used !== undefined && total ? (100 * used) / total : undefined,
    rate: num(inf.rate_per_s),
    p95: p95s.length ? Math.max(...p95s) : undefined,
    queue: num(inf.queue_depth),
    errors: num(inf.errors),
    warnings,
  };
}

// ---- formatting ---------------------------------------------------------------------------------

const fmt = {
  pct: (v) => (v === undefined ? '–' : `${v.toFixed(0)}%`),
  temp: (v) => (v === undefined ? '–' : `${v.toFixed(1)} °C`),
  rate: (v) => (v === undefined ? '–' : `${v < 10 ? v.toFixed(1) : v.toFixed(0)}/s`),
  ms,
  mem: (f) => (f.used === undefined ? (f.memPct === undefined ? '–' : `${f.memPct.toFixed(0)}%`) : `${Math.round(f.used)} MiB${f.memPct !== undefined ? ` (${f.memPct.toFixed(0)}%)` : ''}`),
  clock: (t) => new Date(t - state.skew).toLocaleTimeString([], { hour12: false }),
  ago: (ms) => (ms < 60_000 ? `${Math.max(0, Math.round(ms / 1000))} s ago` : ms < 3_600_000 ? `${Math.round(ms / 60_000)} min ago` : `${(ms / 3_600_000).toFixed(1)} h ago`),
};

function colorOf(node) {
  const nodes = [...state.boards.keys()].sort();
  return COLORS[Math.max(0, nodes.indexOf(node)) % COLORS.length];
}

// ---- the boards -------------------------------------------------------------------------------

function stateOf(s) {
  if (!s.online) return 'offline';
  return s.draining ? 'draining' : 'online';
}

function renderBoards() {
  const tbody = $('boards').tBodies[0];
  const now = serverNow();
  const rows = new Map([...tbody.rows].map((r) => [r.dataset.node, r]));
  const nodes = [...state.boards.keys()].sort();
  let withHealth = 0;
  for (const node of nodes) {
    const b = state.boards.get(node);
    const s = b.status;
    const st = stateOf(s);
    // A report of an earlier process of the board (retained) says nothing of this one.
    const current = b.health && b.health.instance === s.instance;
    const f = current ? figures(b.health) : {};
    if (current) withHealth++;
    let row = rows.get(node);
    rows.delete(node);
    if (!row) {
      row = h('tr', { data: { node } });
      for (let i = 0; i < 10; i++) row.append(h('td'));
    }
    // The moment this page showed the board offline: what the health benchmark measures.
    if (st === 'offline' && row.dataset.state && row.dataset.state !== 'offline') row.dataset.offlineAt = String(Date.now());
    if (st !== 'offline') delete row.dataset.offlineAt;
    row.dataset.state = st;
    row.dataset.role = s.role ?? '';
    const c = row.cells;
    c[0].replaceChildren(h('span', { class: 'swatch', data: { color: colorOf(node) } }), node, node === state.self ? h('span', { class: 'muted small' }, ' (this page)') : '');
    c[0].firstChild.style.background = colorOf(node);
    // A dead board has no role any more (and its will names the role it had when it connected).
    c[1].replaceChildren(s.online ? h('span', { class: `role role-${s.role ?? 'joining'}` }, s.role ?? '?') : '–');
    const since = b.since == null ? '' : st === 'offline' ? ` since ${fmt.clock(b.since)} (${fmt.ago(now - b.since)})` : '';
    c[2].replaceChildren(h('span', { class: `state state-${st}` }, st), since, ...(s.online && f.warnings?.length ? [' ', h('span', { class: 'warn-badge', title: 'Raspberry Pi firmware flags, now' }, f.warnings.join(', '))] : []));
    c[3].textContent = s.addresses?.length ? `${s.addresses[0]}:${s.port ?? ''}` : '–';
    c[3].title = (s.addresses ?? []).join(', ');
    c[4].textContent = (s.models ?? []).map((m) => m.name).join(', ') || '–';
    const stale = !s.online || !current;
    c[5].textContent = stale ? '–' : fmt.pct(f.load);
    c[6].textContent = stale ? '–' : fmt.temp(f.temp);
    c[7].textContent = stale ? '–' : fmt.mem(f);
    c[8].textContent = stale ? '–' : fmt.rate(f.rate);
    c[9].textContent = stale ? '–' : fmt.ms(f.p95);
    for (const i of [5, 6, 7, 8, 9]) c[i].className = 'num';
    tbody.append(row);
  }
  for (const r of rows.values()) r.remove();
  $('no-health').hidden = withHealth > 0 || nodes.length === 0;

  const online = nodes.map((n) => state.boards.get(n).status).filter((s) => s.online);
  $('tile-online').textContent = `${online.length} / ${nodes.length}`;
  $('tile-broker').textContent = online.find((s) => s.role === 'broker')?.node ?? 'none';
  const rate = meshRate();
  $('tile-rate').textContent = rate === undefined ? '–' : `${rate.toFixed(rate < 10 ? 1 : 0)} req/s`;
  $('tile-models').textContent = String(new Set(online.flatMap((s) => (s.models ?? []).map((m) => m.name))).size);
}

/** The sum of the latest rates of the online boards that report one. */
function meshRate() {
  let sum;
  for (const b of state.boards.values()) {
    if (!b.status.online || b.health?.instance !== b.status.instance) continue;
    const r = figures(b.health).rate;
    if (r !== undefined) sum = (sum ?? 0) + r;
  }
  return sum;
}

// ---- history and charts -------------------------------------------------------------------------

function record(node, health, at) {
  const f = figures(health);
  const list = state.history.get(node) ?? [];
  if (list.length && list[list.length - 1].t >= at) return; // seen already (a snapshot after a reconnection)
  list.push({ t: at, load: f.load, temp: f.temp, rate: f.rate });
  state.history.set(node, list);
  const rate = meshRate();
  const last = state.throughput[state.throughput.length - 1];
  if (rate !== undefined && (!last || at >= last[0])) state.throughput.push([at, rate]);
  trim();
}

function trim() {
  const cut = serverNow() - WINDOW_MS - 10_000;
  for (const [node, list] of state.history) {
    while (list.length && list[0].t < cut) list.shift();
    if (!list.length) state.history.delete(node);
  }
  while (state.throughput.length && state.throughput[0][0] < cut) state.throughput.shift();
}

function renderCharts() {
  const now = serverNow();
  const series = (key) => [...state.history].map(([node, list]) => ({ name: node, color: colorOf(node), points: list.map((p) => [p.t, p[key]]).filter(([, v]) => v !== undefined) }));
  lineChart($('chart-load'), series('load'), { now, windowMs: WINDOW_MS, yMax: 100 });
  lineChart($('chart-temp'), series('temp'), { now, windowMs: WINDOW_MS, empty: 'no temperature reported' });
  lineChart($('chart-rate'), series('rate'), { now, windowMs: WINDOW_MS });
  lineChart($('chart-mesh'), [{ name: 'mesh', color: '#cfd8e8', points: state.throughput }], { now, windowMs: WINDOW_MS });
  const legend = $('legend');
  legend.replaceChildren(
    ...[...state.boards.keys()].sort().map((node) => {
      const sw = h('span', { class: 'swatch' });
      sw.style.background = colorOf(node);
      return h('span', { class: 'legend-item' }, sw, node);
    }),
  );
}

// ---- the event stream ---------------------------------------------------------------------------

function setConn(s, text) {
  const c = $('conn');
  c.dataset.state = s;
  c.textContent = text;
}

function onSnapshot(d) {
  state.skew = d.now - Date.now();
  state.mesh = d.mesh;
  state.self = d.self;
  $('mesh-name').textContent = `mesh ${d.mesh}`;
  $('seen-from').textContent = `seen from ${d.self}`;
  state.boards = new Map(d.boards.map((b) => [b.node, b]));
  for (const b of d.boards) if (b.health && b.healthAt) record(b.node, b.health, b.healthAt);
  renderAll();
}

function onBoard(d) {
  state.skew = d.now - Date.now();
  const b = d.board;
  if (b.removed) state.boards.delete(b.node);
  else state.boards.set(b.node, { ...state.boards.get(b.node), ...b });
  renderAll();
}

function onHealth(d) {
  state.skew = d.now - Date.now();
  const b = state.boards.get(d.node);
  if (!b) return; // a report of no board the mesh lists
  Object.assign(b, { health: d.health, healthAt: d.at });
  record(d.node, d.health, d.at);
  renderAll();
}

function renderAll() {
  renderBoards();
  renderCharts();
  renderModels(state.boards);
}

function connect() {
  state.source?.close();
  const es = new EventSource('/events');
  state.source = es;
  es.addEventListener('open', () => setConn('live', 'live'));
  es.addEventListener('snapshot', (e) => onSnapshot(JSON.parse(e.data)));
  es.addEventListener('board', (e) => onBoard(JSON.parse(e.data)));
  es.addEventListener('health', (e) => onHealth(JSON.parse(e.data)));
  es.addEventListener('error', async () => {
    setConn('down', 'reconnecting');
    // Refused rather than cut (a login expired, too many dashboards): say so instead of retrying blindly.
    if (es.readyState === EventSource.CLOSED) {
      const session = await fetch('/api/session').then((r) => r.json()).catch(() => undefined);
      if (session && session.login_required && !session.authenticated) return showLogin();
      setTimeout(connect, 2000);
    }
  });
}

// ---- login --------------------------------------------------------------------------------------

function showLogin() {
  state.source?.close();
  $('main').hidden = true;
  $('login').hidden = false;
  setConn('down', 'logged out');
  $('login-token').focus();
}

function showMain(loginRequired) {
  $('login').hidden = true;
  $('main').hidden = false;
  $('logout').hidden = !loginRequired;
  connect();
}

async function start() {
  setUpPlayground();
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const res = await fetch('/api/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token: $('login-token').value.trim() }) });
    if (res.ok) {
      $('login-token').value = '';
      $('login-error').textContent = '';
      showMain(true);
    } else {
      $('login-error').textContent = (await res.json().catch(() => ({}))).message ?? 'refused';
    }
  });
  $('logout').addEventListener('click', async () => {
    await fetch('/api/logout', { method: 'POST' });
    showLogin();
  });
  const session = await fetch('/api/session').then((r) => r.json());
  if (session.login_required && !session.authenticated) showLogin();
  else showMain(session.login_required);
  // Ages and charts move on even when nothing happens.
  setInterval(() => {
    if (!$('main').hidden) {
      trim();
      renderBoards();
      renderCharts();
    }
  }, 5000);
}

void start();
