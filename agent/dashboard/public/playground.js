// The playground: an image dropped or picked goes to the agent (POST /api/infer?model=NAME), which
// sends it through the mesh as an app would; the answer is shown as classes with their scores, or
// as a detector's boxes drawn over the picture in the image's own pixels.
import { $, COLORS, h, ms } from './dom.js';

const current = { image: null };


/** Image models served by online boards. */
function imageModels(boards) {
  const names = new Set();
  for (const b of boards.values()) if (b.status.online) for (const m of b.status.models ?? []) if (m.image) names.add(m.name);
  return [...names].sort();
}

export function renderModels(boards) {
  const select = $('model');
  const names = imageModels(boards);
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
  const file = current.image;
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
  if (current.image !== file || $('model').value !== model) return; // another run started meanwhile
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
  const by = h('p', { class: 'muted small' }, `${r.model}@${r.version} answered by ${r.agent} in ${ms(t.total_ms)} on the board, ${ms(r.round_trip_ms)} round trip`);
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
  current.image = file;
  showPicture(file);
  void run();
}

export function setUpPlayground() {
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
