/**
 * `kizuna models quantize IN OUT`: int8 quantization of an fp32 ONNX model (work in progress).
 */
export async function run(_argv: string[]): Promise<number> {
  console.error('kizuna models quantize: not built yet');
  return 2;
}
