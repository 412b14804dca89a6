/**
 * Who may read the dashboard's data and use its playground. On loopback, or on an open mesh,
 * anyone who reaches the port (as for the mesh itself). On another address of a mesh with
 * credentials, only a browser that presented the dashboard's app token: as `Authorization:
 * Bearer <token>` on each request, or once to POST /api/login, which sets an HttpOnly session
 * cookie (a random id: the token itself never sits in the browser). Compared in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';

export const SESSION_COOKIE = 'kizuna_session';
const SESSION_MS = 12 * 60 * 60 * 1000;
const MAX_SESSIONS = 64;

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Equal strings, in time that does not depend on where they differ (nor on the secret's length). */
export function sameSecret(presented: string, secret: string): boolean {
  return timingSafeEqual(digest(presented), digest(secret));
}

export class Gate {
  /** Session id -> when it expires. Oldest first (Map keeps insertion order). */
  private readonly sessions = new Map<string, number>();

  constructor(
    /** The secret to present; undefined with `required` false. */
    private readonly token: string | undefined,
    readonly required: boolean,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether this request may read data and run inferences. */
  allows(req: http.IncomingMessage): boolean {
    if (!this.required) return true;
    const auth = req.headers.authorization;
    if (auth?.startsWith('Bearer ') && this.token !== undefined && sameSecret(auth.slice(7).trim(), this.token)) return true;
    const sid = cookie(req, SESSION_COOKIE);
    if (!sid) return false;
    const expires = this.sessions.get(sid);
    if (expires === undefined) return false;
    if (expires < this.now()) {
      this.sessions.delete(sid);
      return false;
    }
    return true;
  }

  /** A new session for a browser that presented the token, or undefined. */
  login(presented: string): { id: string; maxAgeS: number } | undefined {
    if (!this.required || this.token === undefined || !sameSecret(presented, this.token)) return undefined;
    const id = randomBytes(32).toString('base64url');
    this.sessions.set(id, this.now() + SESSION_MS);
    while (this.sessions.size > MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    return { id, maxAgeS: SESSION_MS / 1000 };
  }

  logout(req: http.IncomingMessage): void {
    const sid = cookie(req, SESSION_COOKIE);
    if (sid) this.sessions.delete(sid);
  }
}

/** One cookie's value from the request, or undefined. */
export function cookie(req: http.IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function sessionCookie(id: string, maxAgeS: number): string {
  return `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${maxAgeS}`;
}
