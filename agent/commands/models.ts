/**
 * `kizuna models <action>`: one small module per action; this file only dispatches.
 */
const ACTIONS: Record<string, { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }> = {
  sign: { summary: 'sign a model manifest with the mesh key: kizuna models sign MANIFEST', load: () => import('./models-sign.js') },
  pull: { summary: 'download a catalogue model, verified by sha256: kizuna models pull NAME [--dir DIR]', load: () => import('./models-pull.js') },
  catalog: { summary: 'list the catalogue of real models that pull can fetch', load: () => import('./models-catalog.js') },
  quantize: { summary: 'int8-quantize an fp32 ONNX model: kizuna models quantize IN OUT [--samples DIR]', load: () => import('./models-quantize.js') },
  list: { summary: 'list this board\'s store and, with --mesh, the mesh catalogue and who holds each model: kizuna models list [--mesh]', load: () => import('./models-list.js') },
  add: { summary: 'add a model to this board\'s store and share it with the mesh: kizuna models add FILE|MANIFEST [--name N] [--manifest M]', load: () => import('./models-add.js') },
  rm: { summary: 'remove a model from this board\'s store, or with --mesh from every board: kizuna models rm NAME[@VERSION] [--mesh]', load: () => import('./models-rm.js') },
  verify: { summary: 'hash this board\'s model files again, quarantine mismatches: kizuna models verify', load: () => import('./models-verify.js') },
  push: { summary: 'publish a model to the mesh from a laptop and serve it until a board holds it: kizuna models push FILE|MANIFEST --broker URL', load: () => import('./models-push.js') },
};

function usage(): string {
  const lines = Object.entries(ACTIONS).map(([name, a]) => `  ${name.padEnd(9)} ${a.summary}`);
  return `usage: kizuna models <action> [options]\n\nactions:\n${lines.join('\n')}\n\n'kizuna models <action> --help' shows an action's options.`;
}

export async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const action = name ? ACTIONS[name] : undefined;
  if (!action) {
    if (name === 'help' || name === '--help' || name === '-h') return (console.log(usage()), 0);
    if (!name) return (console.log(usage()), 2); // an action is required
    console.error(`kizuna models: unknown action "${name}"\n\n${usage()}`);
    return 2;
  }
  return (await action.load()).run(rest);
}
