#!/usr/bin/env node
// Faults on RFC 8441 WebSockets, from a Node.js 20 `http2` client, for the live tests.
//
//   node node_fault_client.mjs --port P --scenario reset|cut|abort|isolation|cut-more --log out.json
//        [--tls --ca ca.pem --servername localhost]
//
// reset: on one connection /ws/echo (2 messages, close handshake), /ws/reset-after/1 (2
//        messages; the server echoes one and resets the stream) and GET /hello.
// cut:   /ws/cut-after/1 (2 messages): the server echoes one, sends half a frame, drops the
//        connection.
// abort: /ws/echo: one message and its echo, then half a frame, then the client resets its TCP
//        connection (RST).
// isolation: on one connection /ws/echo stays open (one message echoed before, one after)
//        while /ws/reset-after/1 is reset by the server, /ws/end-after/1 ends mid-message
//        (END_STREAM), /ws/bad gets a malformed frame from the client (reserved opcode 0x3),
//        the client resets /ws/client-reset (RST_STREAM) in the middle of a message, and GET
//        /hello runs; then /ws/echo's close handshake and another GET /hello.
// cut-more: /ws/cut-after/1 as in cut, but waits only for that stream to end, then GET /hello
//        and /ws/echo (one message, close handshake) on the same client connection (through an
//        intercepting proxy, the client connection outlives the server's).
// The log lists, per WebSocket, what was sent and received and how the stream ended.
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';

import { FrameReader, OP, OPNAME, frame } from './node_ws.mjs';

const args = { port: 0, scenario: 'reset', log: null, tls: false, ca: null, servername: 'localhost' };
for (let i = 2; i < process.argv.length; i++) {
  const name = process.argv[i].slice(2);
  if (name === 'tls') args.tls = true;
  else args[name] = process.argv[++i];
}
setTimeout(() => { process.stderr.write('fault client: timed out\n'); process.exit(5); }, 15000).unref();

let rawSocket = null;
const MIRROR_END = ['isolation', 'cut-more'].includes(args.scenario);
const scheme = args.tls ? 'https' : 'http';
const authority = `${args.tls ? args.servername : '127.0.0.1'}:${args.port}`;
const session = http2.connect(`${scheme}://${authority}`, {
  createConnection: () => {
    rawSocket = args.tls
      ? tls.connect({ host: '127.0.0.1', port: Number(args.port), servername: args.servername,
        ALPNProtocols: ['h2'], ca: fs.readFileSync(args.ca) })
      : net.connect(Number(args.port), '127.0.0.1');
    return rawSocket;
  },
});
session.on('error', () => {});
const log = { scenario: args.scenario, websockets: [], requests: [] };

function openWs(path) {
  const entry = { path, stream_id: null, status: null, sent: [], received: [], end: null };
  log.websockets.push(entry);
  const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': scheme,
    ':path': path, ':authority': authority, 'sec-websocket-version': '13' }, { endStream: false });
  const waiters = [];
  const reader = new FrameReader(({ opcode, payload }) => {
    entry.received.push({ opcode: OPNAME[opcode], payload_b64: payload.toString('base64') });
    const w = waiters.shift();
    if (w) w();
  });
  stream.on('response', (h) => { entry.status = h[':status']; entry.stream_id = stream.id; });
  stream.on('data', (d) => reader.feed(d));
  // The peer ended its side (END_STREAM): end ours too, as an RFC 8441 peer does (only in the
  // scenarios written for intercept mode; the others keep their original byte sequence).
  if (MIRROR_END) {
    stream.on('end', () => { entry.remote_end = true; if (!stream.writableEnded) stream.end(); });
  }
  stream.on('error', () => {});
  const ended = new Promise((resolve) => stream.on('close', () => {
    entry.end = entry.end ?? `closed:rst_code=${stream.rstCode}`;
    resolve();
  }));
  const send = (opcode, data) => {
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data);
    stream.write(frame(opcode, payload, { mask: true }));
    entry.sent.push({ opcode: OPNAME[opcode], payload_b64: payload.toString('base64') });
  };
  const next = () => new Promise((resolve) => waiters.push(resolve));
  return { entry, stream, send, next, ended };
}

function get(path) {
  return new Promise((resolve) => {
    const req = session.request({ ':method': 'GET', ':scheme': scheme, ':path': path,
      ':authority': authority });
    const entry = { path, stream_id: null, status: null, body_length: 0 };
    log.requests.push(entry);
    req.on('response', (h) => { entry.status = h[':status']; entry.stream_id = req.id; });
    req.on('data', (d) => { entry.body_length += d.length; });
    req.on('close', resolve);
    req.on('error', () => {});
    req.end();
  });
}

function done(code = 0) {
  fs.writeFileSync(args.log, JSON.stringify(log, null, 1));
  process.exit(code);
}

await new Promise((resolve) => session.once('remoteSettings', resolve));
if (args.scenario === 'reset') {
  const echo = openWs('/ws/echo');
  const reset = openWs('/ws/reset-after/1');
  const hello = get('/hello');
  echo.send(OP.text, 'first'); echo.send(OP.binary, 'second');
  reset.send(OP.text, 'one'); reset.send(OP.text, 'two');
  await echo.next(); await echo.next();
  echo.send(OP.close, Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('bye')]));
  await echo.next();
  echo.entry.end = 'close_handshake';
  echo.stream.close(http2.constants.NGHTTP2_CANCEL);
  await Promise.all([reset.ended, hello, echo.ended]);
  session.close(() => done());
  setTimeout(() => done(), 1000);
} else if (args.scenario === 'cut') {
  const cut = openWs('/ws/cut-after/1');
  cut.send(OP.text, 'one'); cut.send(OP.text, 'two');
  await new Promise((resolve) => session.on('close', resolve));
  done();
} else if (args.scenario === 'isolation') {
  const echo = openWs('/ws/echo');
  echo.send(OP.text, 'first');
  await echo.next();
  const reset = openWs('/ws/reset-after/1');
  reset.send(OP.text, 'one'); reset.send(OP.text, 'two');
  const end = openWs('/ws/end-after/1');
  end.send(OP.text, 'one'); end.send(OP.text, 'two');
  const bad = openWs('/ws/bad');
  bad.send(OP.text, 'ok');
  await bad.next();
  // A masked frame with the reserved opcode 0x3: a protocol error (RFC 6455 5.2).
  bad.stream.write(Buffer.from([0x83, 0x82, 1, 2, 3, 4, 0x70, 0x6b]));
  bad.entry.sent.push({ opcode: 'reserved-0x3', payload_b64: '' });
  // The client resets a stream in the middle of a message (half a frame, then RST_STREAM).
  const gone = openWs('/ws/client-reset');
  gone.send(OP.text, 'one');
  await gone.next();
  // destroy(), not close(): close() ends the stream (END_STREAM) before its RST_STREAM.
  gone.stream.write(Buffer.from([0x81, 0x80 | 100, 1, 2, 3, 4, 9, 9, 9, 9]),
    () => { gone.entry.end = 'client_reset'; gone.stream.destroy(); });
  const hello = get('/hello');
  await Promise.all([reset.ended, end.ended, bad.ended, gone.ended, hello]);
  echo.send(OP.text, 'second');
  await echo.next();
  echo.send(OP.close, Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('bye')]));
  await echo.next();
  echo.entry.end = 'close_handshake';
  await get('/hello');
  echo.stream.close(http2.constants.NGHTTP2_CANCEL);
  await echo.ended;
  session.close(() => done());
  setTimeout(() => done(), 1000);
} else if (args.scenario === 'cut-more') {
  const cut = openWs('/ws/cut-after/1');
  cut.send(OP.text, 'one'); cut.send(OP.text, 'two');
  await cut.ended;
  await get('/hello');
  const echo = openWs('/ws/echo');
  echo.send(OP.text, 'after the cut');
  await echo.next();
  echo.send(OP.close, Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('bye')]));
  await echo.next();
  echo.entry.end = 'close_handshake';
  echo.stream.close(http2.constants.NGHTTP2_CANCEL);
  await echo.ended;
  session.close(() => done());
  setTimeout(() => done(), 1000);
} else {
  const ws = openWs('/ws/echo');
  ws.send(OP.text, 'one');
  await ws.next();
  // Half a masked text frame (announces 100 bytes, sends 4), then RST on the TCP connection.
  ws.stream.write(Buffer.from([0x81, 0x80 | 100, 1, 2, 3, 4, 9, 9, 9, 9]), () => {
    setTimeout(() => { ws.entry.end = 'client_reset'; rawSocket.resetAndDestroy(); done(); }, 100);
  });
}
