/**
 * The dashboard's HTTP plumbing: security headers on every answer, JSON errors with the mesh's
 * stable codes, and request bodies read under a byte limit.
 */
import type http from 'node:http';
import { KizunaError, type ErrorCode } from '../../mesh/errors.js';

/** Same origin only: no inline script or style, nothing fetched from elsewhere, never framed. */
export const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function securityHeaders(res: http.ServerResponse): void {
  res.setHeader('Content-Security-Policy', CSP);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
  res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** An error as the mesh words it everywhere: `{code, message}`. */
export function sendError(res: http.ServerResponse, status: number, code: ErrorCode, message: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { code, message }, headers);
}

/** The HTTP status for a mesh error that came back from an inference. */
export function statusOf(code: ErrorCode): number {
  switch (code) {
    case 'KZ_ERR_UNKNOWN_MODEL':
      return 404;
    case 'KZ_ERR_TOO_LARGE':
      return 413;
    case 'KZ_ERR_OVERLOADED':
    case 'KZ_ERR_SHUTTING_DOWN':
    case 'KZ_ERR_CONFIG':
      return 503;
    case 'KZ_ERR_TIMEOUT':
      return 504;
    case 'KZ_ERR_UNAUTHORIZED':
      return 401;
    case 'KZ_ERR_FORBIDDEN':
      return 403;
    case 'KZ_ERR_INTERNAL':
    case 'KZ_ERR_INFERENCE':
      return 502;
    default:
      return 422;
  }
}

/**
 * The request's body, at most `limit` bytes: a Content-Length over it is refused before a byte is
 * read, and a body that grows past it (chunked) is cut off as soon as it does.
 */
export function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > limit) return reject(new KizunaError('KZ_ERR_TOO_LARGE', `the body is ${declared} bytes; the limit is ${limit}`));
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.pause();
        reject(new KizunaError('KZ_ERR_TOO_LARGE', `the body is over the limit of ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(Buffer.concat(chunks, size)));
    req.once('error', reject);
  });
}
