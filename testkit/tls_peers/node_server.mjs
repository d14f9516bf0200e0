#!/usr/bin/env node
// Node.js 20 `http2.createSecureServer` with RFC 8441 (enableConnectProtocol), one listener per
// TLS configuration, so that one process serves every protocol version / cipher suite a test
// wants to see on the wire (the server forces them: minVersion, maxVersion, ciphers).
//
//   node node_server.mjs --cert c.pem --key k.pem --configs '[{"name": "t13-chacha",
//        "minVersion": "TLSv1.3", "maxVersion": "TLSv1.3",
//        "ciphers": "TLS_CHACHA20_POLY1305_SHA256"}, ...]' [--lifetime 120]
//
// Prints `READY {"name": port, ...}` once every listener accepts; stops when stdin closes or
// after --lifetime seconds.  Routes: extended CONNECT with :protocol websocket (RFC 6455 frames
// echoed by hand: data frames back unmasked as they came, ping -> pong, close -> close and
// END_STREAM), GET /big?n=N (N deterministic bytes), anything else 404.
// Every listener binds 127.0.0.1 only.

import fs from 'node:fs';
import http2 from 'node:http2';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const cert = fs.readFileSync(arg('cert'));
const key = fs.readFileSync(arg('key'));
const configs = JSON.parse(arg('configs', '[]'));
const lifetime = Number(arg('lifetime', '120')) * 1000;

function bigBody(n) {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

function frame(opcode, payload, fin = true) {
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([(fin ? 0x80 : 0) | opcode, n]);
  else if (n < 65536) {
    head = Buffer.alloc(4);
    head[0] = (fin ? 0x80 : 0) | opcode; head[1] = 126; head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = (fin ? 0x80 : 0) | opcode; head[1] = 127; head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

function echoWebSocket(stream) {
  let buf = Buffer.alloc(0);
  stream.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0;
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let pos = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); pos = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); pos = 10; }
      const maskLen = masked ? 4 : 0;
      if (buf.length < pos + maskLen + len) return;
      const mask = buf.subarray(pos, pos + maskLen);
      const payload = Buffer.from(buf.subarray(pos + maskLen, pos + maskLen + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= mask[i & 3];
      buf = buf.subarray(pos + maskLen + len);
      if (opcode === 0x8) {
        stream.end(frame(0x8, payload));
        return;
      }
      if (opcode === 0x9) stream.write(frame(0xa, payload));
      else if (opcode !== 0xa) stream.write(frame(opcode, payload, fin));
    }
  });
  stream.on('error', () => {});
}

function serve(config) {
  const server = http2.createSecureServer({
    cert, key, ALPNProtocols: ['h2'], settings: { enableConnectProtocol: true },
    minVersion: config.minVersion, maxVersion: config.maxVersion, ciphers: config.ciphers,
  });
  server.on('stream', (stream, headers) => {
    if (headers[':method'] === 'CONNECT' && headers[':protocol'] === 'websocket') {
      stream.respond({ ':status': 200 });
      echoWebSocket(stream);
      return;
    }
    const url = new URL(headers[':path'] || '/', 'https://x');
    if (headers[':method'] === 'GET' && url.pathname === '/big') {
      const body = bigBody(Number(url.searchParams.get('n') || '0'));
      stream.respond({ ':status': 200, 'content-length': String(body.length) });
      stream.end(body);
      return;
    }
    stream.respond({ ':status': 404 });
    stream.end('not found\n');
  });
  server.on('sessionError', () => {});
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve([config.name, server])));
}

const servers = await Promise.all(configs.map(serve));
const ports = Object.fromEntries(servers.map(([name, s]) => [name, s.address().port]));
process.stdout.write(`READY ${JSON.stringify(ports)}\n`);

function stop() {
  for (const [, s] of servers) s.close();
  setTimeout(() => process.exit(0), 500).unref();
}
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
setTimeout(stop, lifetime).unref();
