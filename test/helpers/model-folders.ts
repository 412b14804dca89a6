/** Throw-away model folders for store tests: each call makes a new folder holding the given files. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type FolderFiles = Record<string, string | Uint8Array | object>;

/**
 * Folders under one temp root, removed by remove(). Objects are written as JSON; a name may hold
 * slashes (sub-folders are made).
 */
export function modelFolders(prefix: string): { folder(files: FolderFiles): string; root: string; remove(): void } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `kizuna-${prefix}-`));
  let count = 0;
  return {
    root,
    folder(files) {
      const dir = path.join(root, `models-${count++}`);
      fs.mkdirSync(dir);
      for (const [name, content] of Object.entries(files)) {
        fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
        fs.writeFileSync(path.join(dir, name), typeof content === 'string' || content instanceof Uint8Array ? content : JSON.stringify(content, null, 2));
      }
      return dir;
    },
    remove: () => fs.rmSync(root, { recursive: true, force: true }),
  };
}
