/** Namespaced, levelled logs on stderr (stdout is kept for command output and JSON). */
export type Level = 'debug' | 'info' | 'warn' | 'error' | 'silent';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  child(ns: string): Logger;
}

export function createLogger(level: Level = 'info', ns = 'kizuna', write: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  const min = ORDER[level];
  const at = (lvl: Exclude<Level, 'silent'>) => (msg: string) => {
    if (ORDER[lvl] >= min) write(`${new Date().toISOString()} ${lvl.padEnd(5)} [${ns}] ${msg}`);
  };
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (sub) => createLogger(level, `${ns}:${sub}`, write),
  };
}
