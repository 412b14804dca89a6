/**
 * `kizuna top`: `kizuna status`, live. It keeps its subscription to the statuses and health
 * reports and redraws the terminal (ANSI: home, clear) when something changes, at most every
 * `--refresh` seconds, and at least that often (the "last seen" ages move). q, Ctrl-C or SIGTERM
 * quits and gives the terminal back as it was.
 */
import { parseArgs } from 'node:util';
import { CONNECT_HELP, connectView, MeshBoards, renderTable, STATUS_OPTIONS, type BoardRow } from './status.js';

const HELP = `usage: kizuna top [--broker URL] [--refresh S] [options]

Every board of the mesh, live: role, online, address, models, load, temperature, memory, requests
per second, p95 latency and when it last reported (see kizuna status). q or Ctrl-C quits.

  --refresh S       redraw at most (and at least) every S seconds (default 1, 0.2 to 60)
${CONNECT_HELP}`;

const FIRST_FRAME_MS = 250;
const CLEAR = '\x1b[H\x1b[2J';
const HIDE_CURSOR = '\x1b[?25l';
const SHOW_CURSOR = '\x1b[?25h';

/** One screen: a title line, the table and a totals line. Pure, for the tests. */
export function renderFrame(mesh: string, rows: readonly BoardRow[], now: number): string {
  const online = rows.filter((r) => r.online).length;
  const rate = rows.reduce((sum, r) => sum + (r.online ? (r.rate_per_s ?? 0) : 0), 0);
  const time = new Date(now).toISOString().slice(11, 19);
  return [
    `kizuna top - mesh ${mesh} - ${rows.length} board${rows.length === 1 ? '' : 's'}, ${online} online - ${rate.toFixed(1)} req/s - ${time} UTC   (q quits)`,
    '',
    renderTable(rows),
    '',
  ].join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...STATUS_OPTIONS, refresh: { type: 'string' } } });
  if (values.help) return (console.log(HELP), 0);
  const refreshS = Number(values.refresh ?? 1);
  if (!Number.isFinite(refreshS) || refreshS < 0.2 || refreshS > 60) {
    console.error('kizuna top: --refresh takes 0.2 to 60 seconds');
    return 2;
  }
  const refreshMs = refreshS * 1000;
  const { link, filters } = await connectView(values);
  const view = new MeshBoards();
  const out = process.stdout;
  const tty = out.isTTY === true;
  let lastDraw = 0;
  let timer: NodeJS.Timeout | undefined;
  const draw = () => {
    clearTimeout(timer);
    lastDraw = Date.now();
    out.write((tty ? CLEAR : '') + renderFrame(link.mesh, view.rows(lastDraw), lastDraw));
    timer = setTimeout(draw, refreshMs);
  };
  // A change redraws at once unless the last frame is younger than the refresh period.
  const changed = () => {
    const wait = lastDraw + refreshMs - Date.now();
    if (wait <= 0) draw();
    else {
      clearTimeout(timer);
      timer = setTimeout(draw, wait);
    }
  };

  let quit!: () => void;
  const quitting = new Promise<void>((resolve) => (quit = resolve));
  const stdin = process.stdin;
  const onKey = (data: Buffer) => {
    // q, Q, Ctrl-C (raw mode sends it as a byte) or Ctrl-D.
    if (data.includes(0x71) || data.includes(0x51) || data.includes(0x03) || data.includes(0x04)) quit();
  };
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.on('data', onKey);
  stdin.on('end', () => undefined);
  stdin.resume();
  process.once('SIGINT', quit);
  process.once('SIGTERM', quit);
  if (tty) out.write(HIDE_CURSOR);

  const off = link.transport.onMessage((topic, payload) => view.accept(topic, payload) && changed());
  try {
    // The first frame waits a moment for the retained messages that the subscription brings.
    lastDraw = Date.now() - refreshMs + FIRST_FRAME_MS;
    timer = setTimeout(draw, FIRST_FRAME_MS);
    await link.transport.subscribe(filters, 1);
    await quitting;
    return 0;
  } finally {
    clearTimeout(timer);
    off();
    stdin.off('data', onKey);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
    process.off('SIGINT', quit);
    process.off('SIGTERM', quit);
    if (tty) out.write(SHOW_CURSOR + '\n');
    await link.close().catch(() => undefined);
  }
}
