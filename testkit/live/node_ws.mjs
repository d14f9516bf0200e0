// RFC 6455 framing shared by the live tests' Node.js server and fault client (no npm packages).
import crypto from 'node:crypto';

export const OP = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };
export const OPNAME = { 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

// One frame; `mask` true for client frames (RFC 6455 5.3); `zeroMask` uses the all-zero key (a
// valid key that leaves the payload as is: the benchmark's clients measure the proxy, not
// JavaScript's XOR loop).
export function frame(opcode, payload, { fin = true, mask = false, zeroMask = false } = {}) {
  const len = payload.length;
  let head;
  if (len <= 125) { head = Buffer.alloc(2); head[1] = len; }
  else if (len <= 0xffff) { head = Buffer.alloc(4); head[1] = 126; head.writeUInt16BE(len, 2); }
  else { head = Buffer.alloc(10); head[1] = 127; head.writeBigUInt64BE(BigInt(len), 2); }
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (!mask) return Buffer.concat([head, payload]);
  head[1] |= 0x80;
  if (zeroMask) return Buffer.concat([head, Buffer.alloc(4), payload]);
  const key = crypto.randomBytes(4);
  const body = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) body[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([head, key, body]);
}

// Incremental frame parser: calls onFrame({fin, opcode, payload}) per complete frame (unmasked).
export class FrameReader {
  constructor(onFrame) { this.buf = Buffer.alloc(0); this.onFrame = onFrame; }
  feed(data) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (b.length < 4) return; len = b.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (b.length < 10) return; len = Number(b.readBigUInt64BE(2)); off = 10; }
      const masked = (b[1] & 0x80) !== 0;
      const key = masked ? b.subarray(off, off + 4) : null;
      if (masked) off += 4;
      if (b.length < off + len) return;
      const payload = Buffer.from(b.subarray(off, off + len));
      if (key && key.readUInt32BE(0) !== 0) for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
      this.buf = b.subarray(off + len);
      this.onFrame({ fin: (b[0] & 0x80) !== 0, opcode: b[0] & 0x0f, payload });
    }
  }
}
