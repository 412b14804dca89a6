// Line charts drawn by hand in inline SVG: no library, nothing fetched.
const NS = 'http://www.w3.org/2000/svg';
const W = 360;
const H = 150;
const PAD = { left: 38, right: 8, top: 8, bottom: 20 };

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A round number at or above `v`, so the axis reads well: 1, 2, 5, 10, 20, 50... */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function label(v) {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(0) : v.toFixed(1);
}

/**
 * Draws `series` ([{ name, color, points: [[t, value], ...] }]) over the last `windowMs` before
 * `now` into `svg`. `yMax` fixes the scale (100 for percentages); otherwise it fits the data.
 */
export function lineChart(svg, series, { now, windowMs, yMax, empty = 'no data yet' }) {
  svg.replaceChildren();
  const x0 = now - windowMs;
  const visible = series.map((s) => ({ ...s, points: s.points.filter(([t, v]) => t >= x0 - 5000 && Number.isFinite(v)) }));
  const max = yMax ?? niceMax(Math.max(0, ...visible.flatMap((s) => s.points.map(([, v]) => v))) * 1.1);
  const px = (t) => PAD.left + ((t - x0) / windowMs) * (W - PAD.left - PAD.right);
  const py = (v) => H - PAD.bottom - (Math.min(v, max) / max) * (H - PAD.top - PAD.bottom);
  for (const f of [0, 0.5, 1]) {
    const y = py(max * f);
    svg.append(el('line', { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: 'grid' }));
    svg.append(el('text', { x: PAD.left - 4, y: y + 3, 'text-anchor': 'end', class: 'axis' }, label(max * f)));
  }
  for (const [f, text] of [[0, `-${Math.round(windowMs / 60000)} min`], [0.5, `-${Math.round(windowMs / 120000)} min`], [1, 'now']]) {
    svg.append(el('text', { x: PAD.left + f * (W - PAD.left - PAD.right), y: H - 5, 'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle', class: 'axis' }, text));
  }
  let drawn = 0;
  for (const s of visible) {
    if (!s.points.length) continue;
    drawn++;
    const pts = s.points.map(([t, v]) => `${px(Math.max(t, x0)).toFixed(1)},${py(v).toFixed(1)}`).join(' ');
    const line = el('polyline', { points: pts, fill: 'none', stroke: s.color, 'stroke-width': 2, 'stroke-linejoin': 'round', 'data-series': s.name });
    line.append(el('title', {}, s.name));
    svg.append(line);
    const [t, v] = s.points[s.points.length - 1];
    svg.append(el('circle', { cx: px(t), cy: py(v), r: 2.5, fill: s.color }));
  }
  if (!drawn) svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, empty));
}
