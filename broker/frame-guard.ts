import type { Duplex } from 'node:stream';

/** MQTT control packet type of PUBLISH (fixed header, high nibble). */
export const PUBLISH_PACKET_TYPE = 3;

/**
 * Watches the MQTT fixed headers of a connection and destroys it as soon as a packet announces a
 * remaining length above `limitBytes`, before its body is buffered: mqtt-packet has no size limit of
 * its own and would otherwise hold up to 256 MiB per client.
 *
 * Attach after `aedes.handle(stream)`: aedes reads with a 'readable' listener, so this 'data'
 * listener only observes the chunks aedes reads (it does not switch the stream to flowing mode),
 * and sees each chunk before the parser does.
 */
export function guardFrameSize(
  stream: Duplex,
  limitBytes: number,
  onOversize: (packetType: number, lengthBytes: number) => void,
): void {
  let state: 'header' | 'length' | 'body' = 'header';
  let packetType = 0;
  let length = 0;
  let multiplier = 1;
  let remaining = 0;

  const watch = (chunk: Buffer | string): void => {
    if (typeof chunk === 'string') return; // aedes never sets an encoding
    let i = 0;
    while (i < chunk.length) {
      if (state === 'body') {
        const n = Math.min(remaining, chunk.length - i);
        remaining -= n;
        i += n;
        if (remaining === 0) state = 'header';
        continue;
      }
      const byte = chunk[i++] as number;
      if (state === 'header') {
        packetType = byte >> 4;
        length = 0;
        multiplier = 1;
        state = 'length';
        continue;
      }
      // remaining length: variable byte integer, at most 4 bytes (MQTT-2.2.3)
      length += (byte & 0x7f) * multiplier;
      multiplier *= 128;
      if (length > limitBytes) {
        stream.off('data', watch);
        onOversize(packetType, length);
        stream.destroy();
        return;
      }
      if ((byte & 0x80) !== 0) continue;
      remaining = length;
      state = remaining === 0 ? 'header' : 'body';
    }
  };
  stream.on('data', watch);
}
