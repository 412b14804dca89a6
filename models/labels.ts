/** Class label files: one label per line, either "name" or "index,name". */
import { KizunaError } from '../mesh/errors.js';

/** As the manifest's `labels` array allows. */
const MAX_LABELS = 100000;
const INDEXED = /^\s*(\d+)\s*,(.*)$/;

/** Drops CSV-style quotes; ImageNet's Labels.txt even ends with one stray quote. */
function clean(name: string): string {
  return name.trim().replace(/^"|"$/g, '').trim();
}

/**
 * Labels by class index. The file is "index,name" when every non-blank line starts that way
 * (names may hold commas: "281,tabby, tabby cat" -> "tabby, tabby cat"); otherwise each line
 * is one name, so a plain label such as "3,5-dimethyl..." is never read as an index.
 * Blank trailing lines are ignored; indexes missing from an indexed file become "".
 */
export function parseLabels(text: string): string[] {
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && (lines[lines.length - 1] as string).trim() === '') lines.pop();
  if (lines.length > MAX_LABELS) throw new KizunaError('KZ_ERR_MANIFEST', `more than ${MAX_LABELS} labels`);
  const filled = lines.filter((l) => l.trim() !== '');
  if (filled.length === 0 || !filled.every((l) => INDEXED.test(l))) return lines.map(clean);

  const labels: string[] = [];
  for (const line of filled) {
    const [, digits, name] = INDEXED.exec(line) as RegExpExecArray;
    const index = Number(digits);
    if (index >= MAX_LABELS) throw new KizunaError('KZ_ERR_MANIFEST', `label index ${index} is over ${MAX_LABELS - 1}`);
    if (labels[index] !== undefined) throw new KizunaError('KZ_ERR_MANIFEST', `label index ${index} appears twice`);
    labels[index] = clean(name as string);
  }
  // Sparse arrays hide holes from forEach and JSON; fill them.
  return Array.from(labels, (l) => l ?? '');
}
