/**
 * The node id: created once, kept in the data directory, so a board keeps its name across
 * restarts and upgrades. A board that finds its id already taken by another live board (an SD
 * card copied to a second Pi) takes a fresh one with `renewNodeId` instead of fighting over it.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { KizunaError } from '../mesh/errors.js';
import { isSegment } from '../mesh/topics.js';

const FILE = 'node-id';

/** A readable, unique id: the host name (made safe for topics) and 4 random hex digits. */
export function newNodeId(hostname = os.hostname(), random = () => randomBytes(2).toString('hex')): string {
  const base = hostname.toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^[-_]+|[-_]+$/g, '').slice(0, 48) || 'node';
  return `${base}-${random()}`;
}

export async function loadNodeId(dataDir: string): Promise<string> {
  const file = path.join(dataDir, FILE);
  let text: string | undefined;
  try {
    text = (await fs.readFile(file, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new KizunaError('KZ_ERR_CONFIG', `cannot read ${file}: ${(err as Error).message}`);
  }
  if (text !== undefined) {
    if (!isSegment(text)) throw new KizunaError('KZ_ERR_CONFIG', `${file} holds ${JSON.stringify(text.slice(0, 140))}, not a valid node id; fix or delete it`);
    return text;
  }
  return renewNodeId(dataDir);
}

/** Creates, stores and returns a fresh node id. */
export async function renewNodeId(dataDir: string, hostname?: string): Promise<string> {
  const id = newNodeId(hostname);
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, id + '\n', { mode: 0o600 });
  await fs.rename(tmp, file); // atomic: a power cut never leaves half an id
  return id;
}
