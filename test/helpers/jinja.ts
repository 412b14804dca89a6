/**
 * A tiny evaluator of the Jinja subset Kizuna's Home Assistant templates use (agent/home-assistant/
 * discovery.ts), with Jinja2's semantics where they matter: `{{ expr }}` blocks; numbers, strings,
 * None/True/False; attribute and index access (a missing key is undefined; anything done to an
 * undefined but `default` fails, as in Jinja2); `* / + -`; `a if c else b`; `and`, `or`, `not`;
 * the filters round, map(attribute=), select(test)/reject(test) with the test `number`, max, min,
 * default, float, int (an undefined iterates as an empty list). Values render as Python would (None, True, 50.0). Anything else throws:
 * a template that strays from the subset fails its test instead of passing unchecked.
 *
 * test/unit/home-assistant.test.ts checks it against Python's Jinja2 where that is installed.
 */

class Undefined {
  constructor(readonly why: string) {}
}

/** A float as Python's repr writes it (JSON numbers with a fraction, and every `/` result, are floats). */
class Float {
  constructor(readonly v: number) {}
}

type Value = null | boolean | number | Float | string | Value[] | { [k: string]: Value } | Undefined;

const num = (v: Value): number => {
  if (v instanceof Float) return v.v;
  if (typeof v === 'number' || typeof v === 'boolean') return Number(v);
  throw new Error(`not a number: ${show(v)}`);
};
const isNum = (v: Value): boolean => v instanceof Float || typeof v === 'number' || typeof v === 'boolean';
const defined = (v: Value, what: string): Exclude<Value, Undefined> => {
  if (v instanceof Undefined) throw new Error(`${what} of an undefined value (${v.why})`);
  return v;
};

function truthy(v: Value): boolean {
  if (v instanceof Undefined) return false;
  if (v instanceof Float) return v.v !== 0;
  if (Array.isArray(v)) return v.length > 0;
  if (v && typeof v === 'object') return Object.keys(v).length > 0;
  return Boolean(v);
}

/** Python's repr of a float. */
function pyFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return `${x}.0`;
  const s = String(x);
  return s.replace(/e([+-])(\d)$/, 'e$10$2');
}

function show(v: Value): string {
  if (v instanceof Undefined) return '';
  if (v === null) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (v instanceof Float) return pyFloat(v.v);
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

/** JSON as Python's json.loads reads it: numbers written with a fraction or exponent are floats. */
function fromJson(text: string): Value {
  const marked = JSON.parse(text.replace(/("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g, (m, str: string | undefined, n: string | undefined) => (str ? str : /[.eE]/.test(n!) ? `{"$f":${n}}` : n!)));
  const walk = (v: unknown): Value => {
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (Object.keys(o).length === 1 && '$f' in o) return new Float(o.$f as number);
      return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, walk(x)]));
    }
    return v as Value;
  };
  return walk(marked);
}

type Token = { t: 'num' | 'str' | 'name' | 'op'; v: string };

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  const re = /\s*(?:(\d+\.\d+|\d+)|'([^']*)'|"([^"]*)"|([A-Za-z_][A-Za-z0-9_]*)|(\*\*|==|!=|[-+*/().,|=[\]<>]))/y;
  let i = 0;
  while (i < src.length) {
    if (/^\s*$/.test(src.slice(i))) break;
    re.lastIndex = i;
    const m = re.exec(src);
    if (!m) throw new Error(`cannot read ${JSON.stringify(src.slice(i))}`);
    i = re.lastIndex;
    if (m[1] !== undefined) out.push({ t: 'num', v: m[1] });
    else if (m[2] !== undefined || m[3] !== undefined) out.push({ t: 'str', v: m[2] ?? m[3]! });
    else if (m[4] !== undefined) out.push({ t: 'name', v: m[4] });
    else out.push({ t: 'op', v: m[5]! });
  }
  return out;
}

const FILTERS: Record<string, (v: Value, args: Value[], kw: Record<string, Value>) => Value> = {
  round: (v, [precision = 0]) => {
    const p = 10 ** num(precision);
    return new Float(Math.round(num(defined(v, 'round')) * p) / p);
  },
  float: (v) => new Float(num(defined(v, 'float'))),
  int: (v) => Math.trunc(num(defined(v, 'int'))),
  map: (v, _args, kw) => {
    const list = listOf(v, 'map');
    if (typeof kw.attribute !== 'string') throw new Error('map needs attribute=');
    return list.map((item) => (item && typeof item === 'object' && !Array.isArray(item) && !(item instanceof Float) && !(item instanceof Undefined) && kw.attribute as string in item ? item[kw.attribute as string]! : new Undefined(`no ${kw.attribute}`)));
  },
  select: (v, [test]) => listOf(v, 'select').filter((x) => TESTS[test as string]!(x)),
  reject: (v, [test]) => listOf(v, 'reject').filter((x) => !TESTS[test as string]!(x)),
  max: (v) => {
    const list = listOf(v, 'max');
    return list.length ? list.reduce((a, b) => (num(b) > num(a) ? b : a)) : new Undefined('No aggregated item, sequence was empty.');
  },
  min: (v) => {
    const list = listOf(v, 'min');
    return list.length ? list.reduce((a, b) => (num(b) < num(a) ? b : a)) : new Undefined('No aggregated item, sequence was empty.');
  },
  default: (v, [fallback = '', boolean = false]) => (v instanceof Undefined || (truthy(boolean) && !truthy(v)) ? fallback : v),
};

const TESTS: Record<string, (v: Value) => boolean> = { number: isNum };

/** A list to iterate; an undefined iterates as empty, as in Jinja2. */
function listOf(v: Value, what: string): Value[] {
  if (v instanceof Undefined) return [];
  const list = v;
  if (!Array.isArray(list)) throw new Error(`${what} of a non-list`);
  return list;
}

class Parser {
  private i = 0;
  constructor(private readonly toks: Token[], private readonly vars: Record<string, Value>) {}

  run(): Value {
    const v = this.expr();
    if (this.i < this.toks.length) throw new Error(`unexpected ${this.toks[this.i]!.v}`);
    return v;
  }

  private peek(v?: string): boolean {
    const t = this.toks[this.i];
    return t !== undefined && (v === undefined || ((t.t === 'op' || t.t === 'name') && t.v === v));
  }
  private take(v: string): void {
    if (!this.peek(v)) throw new Error(`expected ${v} at ${this.toks[this.i]?.v ?? 'the end'}`);
    this.i++;
  }

  private expr(): Value {
    const a = this.or();
    if (!this.peek('if')) return a;
    this.take('if');
    const cond = this.or();
    let b: Value = new Undefined('no else');
    if (this.peek('else')) {
      this.take('else');
      b = this.expr();
    }
    return truthy(cond) ? a : b;
  }
  private or(): Value {
    let a = this.and();
    while (this.peek('or')) {
      this.take('or');
      const b = this.and();
      a = truthy(a) ? a : b;
    }
    return a;
  }
  private and(): Value {
    let a = this.not();
    while (this.peek('and')) {
      this.take('and');
      const b = this.not();
      a = truthy(a) ? b : a;
    }
    return a;
  }
  private not(): Value {
    if (this.peek('not')) {
      this.take('not');
      return !truthy(this.not());
    }
    return this.additive();
  }
  private additive(): Value {
    let a = this.multiplicative();
    while (this.peek('+') || this.peek('-')) {
      const op = this.toks[this.i++]!.v;
      const b = this.multiplicative();
      const r = op === '+' ? num(defined(a, '+')) + num(defined(b, '+')) : num(defined(a, '-')) - num(defined(b, '-'));
      a = a instanceof Float || b instanceof Float ? new Float(r) : r;
    }
    return a;
  }
  private multiplicative(): Value {
    let a = this.unary();
    while (this.peek('*') || this.peek('/')) {
      const op = this.toks[this.i++]!.v;
      const b = this.unary();
      if (op === '/') {
        if (num(defined(b, '/')) === 0) throw new Error('division by zero');
        a = new Float(num(defined(a, '/')) / num(b));
      } else {
        const r = num(defined(a, '*')) * num(defined(b, '*'));
        a = a instanceof Float || b instanceof Float ? new Float(r) : r;
      }
    }
    return a;
  }
  /** As Jinja2: a filter applies to the whole unary expression (`-x | abs` is abs(-x)). */
  private unary(withFilters = true): Value {
    let v: Value;
    if (this.peek('-')) {
      this.take('-');
      const x = this.unary(false);
      v = x instanceof Float ? new Float(-x.v) : -num(defined(x, '-'));
    } else v = this.postfix(this.primary());
    return withFilters ? this.filtered(v) : v;
  }
  private filtered(v: Value): Value {
    while (this.peek('|')) {
      this.take('|');
      const name = this.toks[this.i++];
      if (name?.t !== 'name' || !FILTERS[name.v]) throw new Error(`unknown filter ${name?.v}`);
      const args: Value[] = [];
      const kw: Record<string, Value> = {};
      if (this.peek('(')) {
        this.take('(');
        while (!this.peek(')')) {
          const t = this.toks[this.i];
          if (t?.t === 'name' && this.toks[this.i + 1]?.v === '=') {
            this.i += 2;
            kw[t.v] = this.expr();
          } else args.push(this.expr());
          if (!this.peek(')')) this.take(',');
        }
        this.take(')');
      }
      v = FILTERS[name.v]!(v, args, kw);
    }
    return v;
  }
  private postfix(v: Value): Value {
    for (;;) {
      if (this.peek('.')) {
        this.take('.');
        const name = this.toks[this.i++];
        if (name?.t !== 'name') throw new Error('expected a name after .');
        v = this.member(v, name.v);
      } else if (this.peek('[')) {
        this.take('[');
        const key = this.expr();
        this.take(']');
        v = this.member(v, key);
      } else return v;
    }
  }
  private member(v: Value, key: Value): Value {
    const obj = defined(v, `.${show(key)}`);
    if (Array.isArray(obj) && typeof key === 'number') return obj.at(key) ?? new Undefined(`no item ${key}`);
    if (obj && typeof obj === 'object' && !Array.isArray(obj) && !(obj instanceof Float) && typeof key === 'string' && key in obj) return obj[key]!;
    return new Undefined(`no ${show(key)}`);
  }
  private primary(): Value {
    const t = this.toks[this.i++];
    if (!t) throw new Error('unexpected end');
    if (t.t === 'num') return t.v.includes('.') ? new Float(Number(t.v)) : Number(t.v);
    if (t.t === 'str') return t.v;
    if (t.t === 'name') {
      if (t.v === 'None' || t.v === 'none') return null;
      if (t.v === 'True' || t.v === 'true') return true;
      if (t.v === 'False' || t.v === 'false') return false;
      return t.v in this.vars ? this.vars[t.v]! : new Undefined(`no variable ${t.v}`);
    }
    if (t.v === '(') {
      const v = this.expr();
      this.take(')');
      return v;
    }
    throw new Error(`unexpected ${t.v}`);
  }
}

/**
 * Renders `template` as Home Assistant renders an MQTT value template: `value` is the payload,
 * `value_json` the payload parsed as JSON (Python's way: fractions are floats).
 */
export function renderTemplate(template: string, payload: string): string {
  let valueJson: Value = new Undefined('the payload is not JSON');
  try {
    valueJson = fromJson(payload);
  } catch {
    /* not JSON: value_json stays undefined */
  }
  const vars: Record<string, Value> = { value: payload, value_json: valueJson };
  return template.replace(/\{\{([\s\S]*?)\}\}/g, (_, expr: string) => show(new Parser(tokenize(expr), vars).run()));
}
