/**
 * What the dashboard shows, as this agent sees the mesh: every board's latest status (from the
 * roster the agent keeps anyway), when it last went online or offline by this agent's clock (a
 * will carries no time), and its latest health report when the mesh publishes them.
 *
 * Emits 'board' (BoardView, or { node, removed: true }) and 'health' (node, health, at).
 */
import { EventEmitter } from 'node:events';
import type { Roster } from '../../mesh/roster.js';
import type { NodeStatus } from '../../mesh/status.js';

export interface BoardView {
  node: string;
  status: NodeStatus;
  /** When this agent saw the board go online or offline (ms since the epoch); null: it has not changed since this agent first saw it. */
  since: number | null;
  health?: unknown;
  healthAt?: number;
}

export class Feed extends EventEmitter {
  private readonly boards = new Map<string, BoardView>();
  private readonly onChange = (node: string, status: NodeStatus | undefined) => this.update(node, status);

  constructor(
    private readonly roster: Roster,
    private readonly now: () => number = Date.now,
  ) {
    super();
  }

  start(): void {
    // What the roster held before the dashboard started: their times are not known.
    for (const s of this.roster.all()) this.boards.set(s.node, { node: s.node, status: s, since: null });
    this.roster.on('change', this.onChange);
  }

  stop(): void {
    this.roster.off('change', this.onChange);
  }

  all(): BoardView[] {
    return [...this.boards.values()].sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  /** A health report of `node`, already checked against its schema, and when it counts from. */
  setHealth(node: string, health: unknown, at = this.now()): void {
    const board = this.boards.get(node);
    if (board) [board.health, board.healthAt] = [health, at];
    this.emit('health', node, health, at);
  }

  private update(node: string, status: NodeStatus | undefined): void {
    if (!status) {
      if (this.boards.delete(node)) this.emit('board', { node, removed: true });
      return;
    }
    const before = this.boards.get(node);
    // A board seen for the first time (a retained status: maybe a will of last week) has no known time.
    const since = !before ? null : before.status.online !== status.online ? this.now() : before.since;
    const view: BoardView = { ...before, node, status, since };
    this.boards.set(node, view);
    this.emit('board', view);
  }
}
