// The Kizuna dashboard: the mesh as the agent serving this page sees it, streamed by Server-Sent
// Events (/events), kept for the last 10 minutes for the charts, and a playground that sends an
// image through the mesh (POST /api/infer). Every value from the mesh reaches the page as text
// (textContent, SVG attributes), never as HTML.
import { lineChart } from './charts.js';

const WINDOW_MS = 10 * 60 * 1000;
const COLORS = ['#5ec4b6', '#f2b84b', '#e4572e', '#7aa2f7', '#c792ea', '#a6e22e', '#ff8fab', '#8fbcbb'];
const $ = (id) => document.getElementById(id);

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
  image: null,
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
  ms: (v) => (v === undefined ? '–' : `${v < 10 ? v.toFixed(1) : v.toFixed(0)} ms`),
  mem: (f) => (f.used === undefined ? (f.memPct === undefined ? '–' : `${f.memPct.toFixed(0)}%`) : `${Math.round(f.used)} MiB${f.memPct !== undefined ? ` (${f.memPct.toFixed(0)}%)` : ''}`),
  clock: (t) => new Date(t - state.skew).toLocaleTimeString([], { hour12: false }),
  ago: (ms) => (ms < 60_000 ? `${Math.max(0, Math.round(ms / 1000))} s ago` : ms < 3_600_000 ? `${Math.round(ms / 60_000)} min ago` : `${(ms / 3_600_000).toFixed(1)} h ago`),
};

function colorOf(node) {
  const nodes = [...state.boards.keys()].sort();
  return COLORS[Math.max(0, nodes.indexOf(node)) % COLORS.length];
}

function h(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  return e;
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
  renderModels();
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

// ---- the playground -----------------------------------------------------------------------------

/** Image models served by online boards. */
function imageModels() {
  const names = new Set();
  for (const b of state.boards.values()) if (b.status.online) for (const m of b.status.models ?? []) if (m.image) names.add(m.name);
  return [...names].sort();
}

function renderModels() {
  const select = $('model');
  const names = imageModels();
  const current = select.value;
  if ([...select.options].map((o) => o.value).join() === names.join()) return;
  select.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
  select.value = names.includes(current) ? current : names.includes('digits') ? 'digits' : names[0] ?? '';
}

function showPicture(file) {
  const img = $('picture');
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
  // A digit of 28 x 28 pixels is shown with sharp pixels; a photo smoothly.
  img.addEventListener('load', () => img.classList.toggle('tiny', img.naturalWidth < 128), { once: true });
  $('stage').hidden = false;
  $('boxes').replaceChildren();
}

async function run() {
  const file = state.image;
  const model = $('model').value;
  const answer = $('answer');
  if (!file) return;
  if (!model) {
    answer.dataset.state = 'error';
    answer.replaceChildren(h('p', { class: 'error' }, 'No board serves an image model now.'));
    return;
  }
  answer.dataset.state = 'running';
  answer.replaceChildren(h('p', { class: 'muted' }, `asking the mesh (${model})…`));
  $('boxes').replaceChildren();
  let body;
  let ok = false;
  try {
    const res = await fetch(`/api/infer?model=${encodeURIComponent(model)}`, { method: 'POST', headers: { 'Content-Type': file.type || 'application/octet-stream' }, body: file });
    body = await res.json();
    ok = res.ok;
  } catch (err) {
    body = { code: 'KZ_ERR_TIMEOUT', message: `the dashboard did not answer: ${err.message}` };
  }
  if (state.image !== file || $('model').value !== model) return; // another run started meanwhile
  if (!ok) {
    answer.dataset.state = 'error';
    answer.dataset.code = body.code ?? '';
    answer.replaceChildren(h('p', { class: 'error' }, h('strong', {}, body.code ?? 'error'), ' ', body.message ?? ''));
    return;
  }
  showAnswer(body);
}

function showAnswer(r) {
  const answer = $('answer');
  const a = r.answers?.[0];
  const t = r.timings ?? {};
  const by = h('p', { class: 'muted small' }, `${r.model}@${r.version} answered by ${r.agent} in ${fmt.ms(t.total_ms)} on the board, ${fmt.ms(r.round_trip_ms)} round trip`);
  delete answer.dataset.code;
  if (Array.isArray(a)) {
    // A detector: boxes in the image's own pixels.
    drawBoxes(a);
    answer.dataset.label = a[0]?.label ?? '';
    answer.replaceChildren(
      h('p', { class: 'headline' }, a.length ? `${a.length} object${a.length > 1 ? 's' : ''}` : 'nothing found'),
      h('ol', { class: 'scores' }, ...a.slice(0, 20).map((d) => scoreRow(d.label, d.score, `[${d.box.map((v) => Math.round(v)).join(', ')}]`))),
      by,
    );
  } else if (a && typeof a === 'object') {
    answer.dataset.label = String(a.label);
    const top = Array.isArray(a.top) && a.top.length ? a.top : [a];
    answer.replaceChildren(
      h('p', { class: 'headline' }, h('span', { id: 'answer-label' }, String(a.label)), h('span', { class: 'muted' }, ` ${(100 * a.score).toFixed(1)}%`)),
      h('ol', { class: 'scores' }, ...top.map((c) => scoreRow(c.label, c.score))),
      by,
    );
  } else {
    answer.dataset.label = '';
    answer.replaceChildren(h('p', {}, 'The model has no post-processing: no labels to show.'), by);
  }
  answer.dataset.agent = r.agent;
  answer.dataset.state = 'done';
}

function scoreRow(label, score, extra) {
  const bar = h('span', { class: 'bar' });
  bar.style.width = `${Math.max(1, Math.round(100 * score))}%`;
  return h('li', {}, h('span', { class: 'score-label' }, String(label)), h('span', { class: 'bar-track' }, bar), h('span', { class: 'num' }, `${(100 * score).toFixed(1)}%`), extra ? h('span', { class: 'muted small' }, ` ${extra}`) : '');
}

function drawBoxes(detections) {
  const img = $('picture');
  const svg = $('boxes');
  const NS = 'http://www.w3.org/2000/svg';
  const make = (name, attrs, text) => {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const draw = () => {
    svg.setAttribute('viewBox', `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
    // Lines and labels of the same size on screen, whatever the picture's own size.
    const scale = img.naturalWidth / Math.max(1, img.clientWidth);
    const stroke = 2 * scale;
    const size = 12 * scale;
    svg.replaceChildren(
      ...detections.map((d, i) => {
        const [x1, y1, x2, y2] = d.box;
        const color = COLORS[i % COLORS.length];
        const label = `${d.label} ${(100 * d.score).toFixed(0)}%`;
        const top = y1 >= size * 1.3 ? y1 - size * 1.3 : y1;
        const g = make('g', { 'data-label': d.label });
        g.append(
          make('rect', { x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: 'none', stroke: color, 'stroke-width': stroke, class: 'box' }),
          make('rect', { x: x1, y: top, width: label.length * size * 0.6 + size * 0.5, height: size * 1.3, fill: color, class: 'box-label' }),
          make('text', { x: x1 + size * 0.25, y: top + size, fill: '#0d1320', 'font-size': size, 'font-family': 'system-ui, sans-serif' }, label),
        );
        return g;
      }),
    );
  };
  if (img.complete && img.naturalWidth) draw();
  else img.addEventListener('load', draw, { once: true });
}

function choose(file) {
  if (!file) return;
  state.image = file;
  showPicture(file);
  void run();
}

function setUpPlayground() {
  const drop = $('drop');
  $('file').addEventListener('change', (e) => choose(e.target.files?.[0]));
  $('model').addEventListener('change', () => void run());
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    choose(e.dataTransfer?.files?.[0]);
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
