/**
 * A bare MQTT 3.1.1 client over a socket, for what well-behaved clients refuse to send
 * (a wildcard in a publish topic). Packets are written by hand from the MQTT 3.1.1 spec.
 */
import net from 'node:net';
import { once } from 'node:events';

/** MQTT's remaining length: 7 bits per byte, least significant first. */
export function remainingLength(n: number): Buffer {
  const bytes: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    bytes.push(b);
  } while (n > 0);
  return Buffer.from(bytes);
}

/** A length-prefixed MQTT string (or bytes). */
export const str = (s: string | Buffer): Buffer => {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
};

/** A whole packet: its first byte (type and flags), remaining length, body. */
export const packet = (first: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([first]), remainingLength(body.length), body]);

/** Connects, publishes one QoS 0 message, and resolves when the broker has closed or kept the socket. */
export async function rawPublish(port: number, topic: string, payload: Buffer): Promise<{ closedByBroker: boolean }> {
  const socket = net.connect(port, '127.0.0.1');
  // A broker that cuts the connection while we still write resets it: that is a close too.
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const connect = packet(0x10, Buffer.concat([str('MQTT'), Buffer.from([4, 2, 0, 60]), str('raw-client')]));
  socket.write(connect);
  const [connack] = (await once(socket, 'data')) as [Buffer];
  if (connack[0] !== 0x20 || connack[3] !== 0) throw new Error(`connection refused: ${connack.toString('hex')}`);
  socket.write(packet(0x30, Buffer.concat([str(topic), payload])));
  // A PINGREQ after the publish: a broker that kept the connection answers PINGRESP (0xd0).
  socket.write(Buffer.from([0xc0, 0]));
  // (events.once would reject on the reset a cut connection may cause: listen plainly.)
  const outcome = await new Promise<boolean>((resolve) => {
    socket.once('close', () => resolve(true));
    socket.once('data', (d: Buffer) => resolve(d[0] !== 0xd0));
  });
  socket.destroy();
  return { closedByBroker: outcome };
}
