// Small DOM helpers shared by the page's modules. Text always goes in as text, never as HTML.
export const COLORS = ['#5ec4b6', '#f2b84b', '#e4572e', '#7aa2f7', '#c792ea', '#a6e22e', '#ff8fab', '#8fbcbb'];

export const $ = (id) => document.getElementById(id);

/** An element with attributes (`class`, `data: {...}`, others as is) and children (nodes or text). */
export function h(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  return e;
}

/** Milliseconds for people: one decimal under 10. */
export const ms = (v) => (v === undefined ? '–' : `${v < 10 ? v.toFixed(1) : v.toFixed(0)} ms`);
