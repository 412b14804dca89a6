/**
 * How the CLI's app commands (infer, batch) log in to a mesh with credentials: an app token
 * (`kizuna token app NAME`; --token or $KIZUNA_TOKEN) whose name becomes the client name, and the
 * mesh's CA certificate (--ca FILE or $KIZUNA_CA) for mqtts:// and wss:// URLs.
 */
import fs from 'node:fs';
import { KizunaError } from '../../mesh/errors.js';
import { tokenSubject } from '../../mesh/tokens.js';

export const LOGIN_OPTIONS = { token: { type: 'string' as const }, ca: { type: 'string' as const } };
export const LOGIN_HELP = `  --token TOKEN    an app token of a mesh with credentials (or $KIZUNA_TOKEN)
  --ca FILE        the mesh's CA certificate, ca.pem, for mqtts:// and wss:// (or $KIZUNA_CA)`;

export function appLogin(values: { token?: string; ca?: string }): { token?: string; ca?: string; client?: string } {
  const token = values.token ?? process.env.KIZUNA_TOKEN;
  const caFile = values.ca ?? process.env.KIZUNA_CA;
  const out: { token?: string; ca?: string; client?: string } = {};
  if (token) {
    out.token = token;
    // The token names the app: requests and answers go under that name (the broker checks it).
    const sub = tokenSubject(token);
    if (!sub) throw new KizunaError('KZ_ERR_UNAUTHORIZED', 'the token is not a Kizuna app token (kz1.<claims>.<signature>)');
    out.client = sub;
  }
  if (caFile) out.ca = fs.readFileSync(caFile, 'utf8');
  return out;
}
