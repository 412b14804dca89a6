/** Renders raw pixels to image files (the demo and tests send digits as PNG, like a camera would). */
export async function grayToPng(pixels: Uint8Array, width: number, height: number): Promise<Buffer> {
  const sharp = (await import('sharp')).default;
  return sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), { raw: { width, height, channels: 1 } })
    .png({ compressionLevel: 1 })
    .toBuffer();
}

/** A 28x28 MNIST digit (0..1 floats, white on black) as PNG bytes. */
export function digitToPng(pixels: Float32Array): Promise<Buffer> {
  const bytes = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) bytes[i] = Math.round(Math.min(1, Math.max(0, pixels[i]!)) * 255);
  return grayToPng(bytes, 28, 28);
}
