#!/usr/bin/env node
// The soak client of tests/test_hostile_soak.py: C HTTP/2 connections (TLS, ALPN h2, the test
// proxy's certificate not checked), K RFC 8441 WebSockets on each, all open at once; then every
// WebSocket sends N text messages `<conn>:<ws>:<seq>` (W unanswered at most) and checks that the
// echoes come back complete and in order, while each connection also makes G `GET /hello`.
//
//   node soak_client.mjs --port P [--connections 10] [--sockets 100] [--messages 20]
//        [--window 4] [--gets 5] [--timeout 120]
//
// Prints one JSON line: connections, websockets (accepted), max_open (open at once), sent,
// echoed, lost, reordered, gets_ok, errors, seconds.
import http2 from 'node:http2';

import { FrameReader, OP, frame } from './node_ws.mjs';

const o = { port: 0, connections: 10, sockets: 100, messages: 20, window: 4, gets: 5, timeout: 120 };
for (let i = 2; i < process.argv.length; i += 2) o[process.argv[i].slice(2)] = Number(process.argv[i + 1]);
setTimeout(() => { process.stderr.write('soak_client: timed out\n'); process.exit(5); },
  o.timeout * 1000).unref();

const r = { connections: 0, websockets: 0, max_open: 0, sent: 0, echoed: 0, lost: 0,
  reordered: 0, gets_ok: 0, errors: [] };
let open = 0;
const t0 = performance.now();

function get(session) {
  return new Promise((resolve) => {
    const s = session.request({ ':method': 'GET', ':path': '/hello' });
    let body = '';
    s.setEncoding('utf8');
    s.on('data', (d) => { body += d; });
    s.on('end', () => { if (body === 'hello from node\n') r.gets_ok += 1; resolve(); });
    s.on('error', (e) => { r.errors.push(`get: ${e}`); resolve(); });
  });
}

// Open one WebSocket; resolves with {stream, reader hook} once the 200 is in.
function openWs(session, c, k) {
  return new Promise((resolve) => {
    const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket',
      ':scheme': 'https', ':path': `/ws/${c}-${k}`, ':authority': `127.0.0.1:${o.port}`,
      'sec-websocket-version': '13' }, { endStream: false });
    stream.on('error', (e) => { r.errors.push(`ws ${c}:${k}: ${e}`); resolve(null); });
    stream.on('response', (h) => {
      if (h[':status'] !== 200) { r.errors.push(`ws ${c}:${k}: ${h[':status']}`); resolve(null); return; }
      r.websockets += 1;
      open += 1;
      r.max_open = Math.max(r.max_open, open);
      resolve(stream);
    });
  });
}

// Send N sequence-numbered messages, check the echoes, close.
function run(stream, c, k) {
  return new Promise((resolve) => {
    let sent = 0;
    let next = 0; // the sequence number expected next
    let done = false;
    const end = () => {
      if (done) return;
      done = true;
      r.lost += o.messages - next;
      open -= 1;
      stream.close(http2.constants.NGHTTP2_CANCEL);
      resolve();
    };
    const pump = () => {
      while (sent - next < o.window && sent < o.messages) {
        stream.write(frame(OP.text, Buffer.from(`${c}:${k}:${sent}`), { mask: true }));
        sent += 1;
        r.sent += 1;
      }
      if (next === o.messages) stream.write(frame(OP.close, Buffer.from([3, 232]), { mask: true }));
    };
    const reader = new FrameReader(({ opcode, payload }) => {
      if (opcode === OP.close) { end(); return; }
      if (opcode !== OP.text) return;
      const seq = Number(payload.toString().split(':')[2]);
      if (payload.toString() !== `${c}:${k}:${seq}` || seq !== next) r.reordered += 1;
      else r.echoed += 1;
      next += 1;
      pump();
    });
    stream.on('data', (d) => reader.feed(d));
    stream.on('close', end);
    pump();
  });
}

async function connection(c) {
  const session = http2.connect(`https://127.0.0.1:${o.port}`, { rejectUnauthorized: false });
  session.on('error', (e) => r.errors.push(`session ${c}: ${e}`));
  await new Promise((res) => session.once('remoteSettings', res));
  r.connections += 1;
  const streams = [];
  for (let k = 0; k < o.sockets; k++) streams.push(openWs(session, c, k));
  const opened = await Promise.all(streams);
  return { session, opened };
}

const conns = await Promise.all([...Array(o.connections).keys()].map(connection));
// every WebSocket is open now: run them all, with GETs on the same connections
const jobs = [];
conns.forEach(({ session, opened }, c) => {
  opened.forEach((s, k) => { if (s) jobs.push(run(s, c, k)); });
  for (let g = 0; g < o.gets; g++) jobs.push(get(session));
});
await Promise.all(jobs);
for (const { session } of conns) session.close();
r.seconds = (performance.now() - t0) / 1000;
r.errors = r.errors.slice(0, 10);
process.stdout.write(JSON.stringify(r) + '\n');
process.exit(0);
