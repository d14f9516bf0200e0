#!/usr/bin/env node
// WebSocket echo load for bench/bench_live.py: K WebSockets, each sending N binary messages of
// S bytes with at most W unanswered at a time, timing every round trip (send -> its echo).
//
//   node ws_load.mjs --port P --proto h2|h1 [--size 1024] [--count 2000] [--window 8]
//        [--sockets 4] [--seconds 0] [--ca FILE | --tls 1]
//
// h2: one HTTP/2 connection (h2c prior knowledge), K extended-CONNECT WebSockets (RFC 8441);
//     with --ca FILE: over TLS (ALPN h2), trusting FILE, server name localhost.
// h1: K connections, one HTTP/1.1 Upgrade WebSocket each; with --ca FILE: over TLS (ALPN
//     http/1.1), trusting FILE, server name localhost.
// --seconds T > 0: keep sending for T seconds instead of N messages (the long run).
// --tls 1 (h2 only): HTTP/2 over TLS with ALPN h2, certificate not checked (a local test proxy).
// Prints one JSON line: messages, bytes (payload, both ways), seconds, rtt_us percentiles.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';

import { FrameReader, OP, frame } from './node_ws.mjs';

const o = { port: 0, proto: 'h2', size: 1024, count: 2000, window: 8, sockets: 4, seconds: 0,
  ca: '', tls: 0 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].slice(2);
  o[k] = k === 'proto' || k === 'ca' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}
setTimeout(() => { process.stderr.write('ws_load: timed out\n'); process.exit(5); },
  (o.seconds ? o.seconds + 60 : 300) * 1000).unref();

const payload = crypto.randomBytes(o.size);
const rtts = [];
let messages = 0;
const deadline = o.seconds ? performance.now() + o.seconds * 1000 : Infinity;

// Drive one WebSocket: `write(bytes)`, `end(bytes)`; returns {feed, done}.
function drive(write, end) {
  let sent = 0;
  let received = 0;
  const times = [];
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  const more = () => (o.seconds ? performance.now() < deadline : sent < o.count);
  const pump = () => {
    while (sent - received < o.window && more()) {
      times.push(performance.now());
      write(frame(OP.binary, payload, { mask: true, zeroMask: true }));
      sent += 1;
    }
    if (received === sent && !more()) end(frame(OP.close, Buffer.from([3, 232]), { mask: true }));
  };
  const reader = new FrameReader(({ opcode }) => {
    if (opcode === OP.close) { resolveDone(); return; }
    if (opcode !== OP.binary) return;
    rtts.push(performance.now() - times[received]);
    received += 1;
    messages += 1;
    pump();
  });
  return { feed: (d) => reader.feed(d), done, start: pump };
}

async function runH2() {
  const scheme = o.ca || o.tls ? 'https' : 'http';
  const options = o.ca ? { ca: fs.readFileSync(o.ca), servername: 'localhost' }
    : o.tls ? { rejectUnauthorized: false } : {};
  const session = http2.connect(`${scheme}://127.0.0.1:${o.port}`, options);
  session.on('error', (e) => { process.stderr.write(`session: ${e}\n`); process.exit(1); });
  await new Promise((r) => session.once('remoteSettings', r));
  const jobs = [];
  for (let k = 0; k < o.sockets; k++) {
    const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket',
      ':scheme': scheme, ':path': `/ws/${k}`, ':authority': `127.0.0.1:${o.port}`,
      'sec-websocket-version': '13' }, { endStream: false });
    const d = drive((b) => stream.write(b), (b) => stream.write(b));
    stream.on('response', () => d.start());
    stream.on('data', d.feed);
    jobs.push(d.done.then(() => stream.close(http2.constants.NGHTTP2_CANCEL)));
  }
  await Promise.all(jobs);
  session.destroy();
}

function upgrade() {
  return new Promise((resolve, reject) => {
    const socket = o.ca
      ? tls.connect({ port: o.port, host: '127.0.0.1', ca: fs.readFileSync(o.ca),
        servername: 'localhost', ALPNProtocols: ['http/1.1'] })
      : net.connect(o.port, '127.0.0.1');
    socket.setNoDelay(true);
    const key = crypto.randomBytes(16).toString('base64');
    socket.on(o.ca ? 'secureConnect' : 'connect', () => socket.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${o.port}\r\n`
      + `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n`
      + 'Sec-WebSocket-Version: 13\r\n\r\n'));
    let head = Buffer.alloc(0);
    const onData = (d) => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      if (!head.subarray(0, 12).toString().includes('101')) { reject(new Error('no 101')); return; }
      resolve({ socket, rest: head.subarray(end + 4) });
    };
    socket.on('data', onData);
    socket.on('error', reject);
  });
}

async function runH1() {
  const jobs = [];
  for (let k = 0; k < o.sockets; k++) {
    const { socket, rest } = await upgrade();
    const d = drive((b) => socket.write(b), (b) => socket.write(b));
    socket.on('data', d.feed);
    if (rest.length) d.feed(rest);
    d.start();
    jobs.push(d.done.then(() => socket.destroy()));
  }
  await Promise.all(jobs);
}

const t0 = performance.now();
await (o.proto === 'h2' ? runH2() : runH1());
const seconds = (performance.now() - t0) / 1000;
rtts.sort((a, b) => a - b);
const pct = (p) => Math.round(1000 * rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))]);
process.stdout.write(JSON.stringify({ proto: o.proto, size: o.size, messages,
  bytes: 2 * messages * o.size, seconds, rtt_us: { p50: pct(0.5), p99: pct(0.99), max: pct(1) } }) + '\n');
