/** Renders MNIST digits as image files, as a camera or a drawing app would send them. */
import { grayToPng } from './preprocess.js';

export { grayToPng };

/** A 28x28 MNIST digit (0..1 floats, white on black) as PNG bytes. */
export function digitToPng(pixels: Float32Array): Promise<Buffer> {
  const bytes = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) bytes[i] = Math.round(Math.min(1, Math.max(0, pixels[i]!)) * 255);
  return grayToPng(bytes, 28, 28);
}
