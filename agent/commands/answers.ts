/**
 * How the CLI prints a model's answers: one line per classifier answer, or per detected object.
 * A classifier's answer is an object ({label, score, top}); a detector's is the list of objects
 * found in that image ({label, score, box}), best first.
 */
interface Scored {
  label?: string;
  score?: number;
}
interface Classified extends Scored {
  top?: { label: string; score: number }[];
}
interface Detected extends Scored {
  box?: number[];
}

const pct = (score: number | undefined) => `${((score ?? 0) * 100).toFixed(1)}%`;

export function isDetections(answer: unknown): answer is Detected[] {
  return Array.isArray(answer);
}

/** Lines for the answers of one reply (several images: each prefixed with its index). */
export function answerLines(answers: readonly unknown[]): string[] {
  const prefix = (i: number) => (answers.length > 1 ? `[${i}] ` : '');
  return answers.flatMap((a, i) => {
    if (isDetections(a)) {
      const found = a.map((d) => `  ${d.label} ${pct(d.score)} at [${(d.box ?? []).map((v) => Math.round(v)).join(', ')}]`);
      return [`${prefix(i)}${a.length} object${a.length === 1 ? '' : 's'}`, ...found];
    }
    const c = a as Classified;
    const top = (c.top ?? []).map((t) => `${t.label} ${pct(t.score)}`).join(', ');
    return [`${prefix(i)}${c.label} (${pct(c.score)})${top ? `   top: ${top}` : ''}`];
  });
}

/** The summary fields of a batch line: the label and score of a classifier, the object count of a detector. */
export function batchSummary(first: unknown): { label?: string; score?: number; objects?: number } {
  if (first === undefined) return {};
  if (isDetections(first)) return { objects: first.length };
  const c = first as Classified;
  return { ...(c.label !== undefined ? { label: c.label } : {}), ...(c.score !== undefined ? { score: c.score } : {}) };
}
