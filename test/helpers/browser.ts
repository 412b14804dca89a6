/**
 * Debian's Chromium driven by playwright-core, for the dashboard's browser test and the health
 * benchmark: never a browser download. Launched headless with the flags this machine needs (no
 * sandbox as root, no GPU, and no background networking: the network is closed and Chromium's
 * own connections would be refused by the dozen), each time with a fresh empty profile.
 *
 * Also the measure of a board's death to the dashboard showing it offline: the page stamps the
 * row it turns offline with the page's clock (`data-offline-at`), which is the machine's.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { repoRoot } from './shared.js';
import { boardsOf, SseReader } from './sse.js';

export const CHROMIUM = process.env.KIZUNA_CHROMIUM ?? '/usr/bin/chromium';

export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** Where tests keep what they show people (git-ignored). */
export const ARTIFACTS = path.join(repoRoot, 'test-artifacts');

/** Why Chromium cannot run here, or undefined when it can. */
export function chromiumMissing(): string | undefined {
  return fs.existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)`;
}

export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  // playwright gives each launch a new empty profile (a temporary --user-data-dir).
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, timeout: 30_000 });
}

/** Opens the dashboard and waits until its event stream is live. */
export async function openDashboard(browser: Browser, url: string, timeoutMs = 15_000): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  await page.goto(url, { timeout: timeoutMs });
  try {
    await page.waitForSelector('#conn[data-state="live"]', { timeout: timeoutMs });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${problems.join('\n')}`);
  }
  return page;
}

/** Resolves when the boards table shows each node of `roles` online in that role. */
export async function untilBoardsShown(page: Page, roles: Record<string, string>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const [node, role] of Object.entries(roles)) {
    const selector = `#boards tbody tr[data-node="${node}"][data-state="online"][data-role="${role}"]`;
    await page.waitForSelector(selector, { timeout: Math.max(1, deadline - Date.now()), state: 'attached' });
  }
}

/** When (the page's Date.now()) the page turned `node`'s row offline; waits for it, bounded. */
export async function offlineShownAt(page: Page, node: string, timeoutMs = 15_000): Promise<number> {
  const selector = `#boards tbody tr[data-node="${node}"][data-state="offline"][data-offline-at]`;
  await page.waitForSelector(selector, { timeout: timeoutMs, state: 'attached' });
  return Number(await page.getAttribute(selector, 'data-offline-at'));
}

export interface DeathToOffline {
  /** From just before the kill to the dashboard showing the board offline. */
  ms: number;
  /** 'chromium': the page's table; 'sse': the dashboard's event stream (no browser here). */
  via: 'chromium' | 'sse';
}

/**
 * The time from `kill()` (a SIGKILL, say) to the dashboard at `url` showing `node` offline: in
 * Chromium when it is installed (the page as an operator sees it), else on the dashboard's event
 * stream (what the page would draw from, without its few ms of rendering). For the health
 * benchmark: start a mesh whose agent serves a dashboard, then call this with a kill of another
 * board's process.
 */
export async function measureDeathToOffline(o: {
  url: string;
  node: string;
  kill: () => void | Promise<void>;
  timeoutMs?: number;
  browser?: Browser;
  /** Force one way (default: Chromium when installed). */
  via?: 'chromium' | 'sse';
}): Promise<DeathToOffline> {
  const timeoutMs = o.timeoutMs ?? 15_000;
  if (o.via !== 'sse' && (o.browser || o.via === 'chromium' || !chromiumMissing())) {
    const browser = o.browser ?? (await launchChromium());
    try {
      const page = await openDashboard(browser, o.url, timeoutMs);
      await page.waitForSelector(`#boards tbody tr[data-node="${o.node}"][data-state="online"]`, { timeout: timeoutMs });
      const t0 = Date.now();
      await o.kill();
      const ms = (await offlineShownAt(page, o.node, timeoutMs)) - t0;
      await page.close();
      return { ms, via: 'chromium' };
    } finally {
      if (!o.browser) await browser.close();
    }
  }
  const events = await SseReader.open(new URL('/events', o.url).href);
  try {
    await events.until(() => boardsOf(events).get(o.node)?.status.online === true, timeoutMs, `${o.node} online`);
    const t0 = Date.now();
    await o.kill();
    await events.until(() => boardsOf(events).get(o.node)?.status.online === false, timeoutMs, `${o.node} offline`);
    const gone = events.events.findLast((e) => e.event === 'board' && (e.data as { board: { node: string } }).board.node === o.node)!;
    return { ms: gone.at - t0, via: 'sse' };
  } finally {
    events.close();
  }
}
