#!/usr/bin/env node
// The Node.js 20 `http2` server as an RFC 8441 peer (h2c prior knowledge, or TLS with ALPN h2):
// it advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and echoes WebSocket frames on extended-CONNECT
// streams, keeping their fragmentation, answering pings and the close handshake.
//
//   node node_server.mjs [--tls --cert cert.pem --key key.pem] [--lifetime 60]
//
// Prints `READY <port>` once listening on 127.0.0.1; stops when stdin closes or after the
// lifetime.  `GET /hello` answers "hello from node\n".  Faults, for the live tests:
//   /ws/reset-after/K  after echoing K messages, reset the stream (RST_STREAM CANCEL)
//   /ws/cut-after/K    after echoing K messages, send half a frame and drop the connection
//   /ws/end-after/K    after echoing K messages, send half a frame and end the stream
//                      (END_STREAM in the middle of a message; the connection goes on)
// With `--events FILE` it also serves the intercept-mode browser page (`GET /intercept`,
// intercept_page.html; `GET /result` answers "ok") and notes every request and WebSocket as a
// JSON line, as browser_app.py does (type, path, http_version, client_port, test_header, query).
import fs from 'node:fs';
import http2 from 'node:http2';

import { FrameReader, OP, frame } from './node_ws.mjs';

const args = { tls: false, cert: null, key: null, lifetime: 60, events: null };
const PAGE = new URL('./intercept_page.html', import.meta.url);
for (let i = 2; i < process.argv.length; i++) {
  const name = process.argv[i].slice(2);
  if (name === 'tls') args.tls = true;
  else args[name] = process.argv[++i];
}

const settings = { enableConnectProtocol: true };
const server = args.tls
  ? http2.createSecureServer({ cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key),
    settings, ALPNProtocols: ['h2'] })
  : http2.createServer({ settings });

function websocket(stream, path) {
  stream.respond({ ':status': 200 });
  const fault = path.match(/^\/ws\/(reset|cut|end)-after\/(\d+)/);
  const after = fault ? Number(fault[2]) : Infinity;
  let echoed = 0;
  let closed = false;
  const reader = new FrameReader(({ fin, opcode, payload }) => {
    if (closed) return;
    if (opcode === OP.ping) { stream.write(frame(OP.pong, payload)); return; }
    if (opcode === OP.pong) return;
    if (opcode === OP.close) {
      closed = true;
      stream.end(frame(OP.close, payload));
      return;
    }
    stream.write(frame(opcode, payload, { fin }));
    if (!fin) return;
    echoed += 1;
    if (echoed < after) return;
    closed = true;
    const half = Buffer.concat([Buffer.from([0x82, 126, 0x03, 0xe8]), Buffer.alloc(10, 7)]);
    if (fault[1] === 'reset') {
      stream.close(http2.constants.NGHTTP2_CANCEL);
    } else if (fault[1] === 'end') {
      stream.end(half);
    } else {
      // A binary frame announcing 1000 bytes, 10 of them sent: the connection ends mid-message.
      stream.write(Buffer.concat([Buffer.from([0x82, 126, 0x03, 0xe8]), Buffer.alloc(10, 7)]),
        () => setTimeout(() => stream.session.destroy(), 50));
    }
  });
  stream.on('data', (chunk) => reader.feed(chunk));
  stream.on('error', () => {});
}

function note(stream, headers, type) {
  if (!args.events) return;
  const [path, query = ''] = headers[':path'].split('?', 2);
  const row = { type, path, http_version: '2', client_port: stream.session.socket.remotePort,
    test_header: headers['x-h2ws-test'] || '', query };
  fs.appendFileSync(args.events, JSON.stringify(row) + '\n');
}

server.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  const method = headers[':method'];
  const path = headers[':path'];
  const isWs = method === 'CONNECT' && headers[':protocol'] === 'websocket';
  note(stream, headers, isWs ? 'websocket' : 'http');
  if (isWs) {
    websocket(stream, path);
  } else if (method === 'GET' && args.events && path.startsWith('/intercept')) {
    stream.respond({ ':status': 200, 'content-type': 'text/html; charset=utf-8' });
    stream.end(fs.readFileSync(PAGE));
  } else if (method === 'GET' && args.events && path.startsWith('/result')) {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end('ok\n');
  } else if (method === 'GET' && path === '/hello') {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end('hello from node\n');
  } else {
    stream.respond({ ':status': 404 });
    stream.end('not found\n');
  }
});
server.on('session', (session) => session.on('error', () => {}));
server.on('error', (err) => { process.stderr.write(`node_server: ${err}\n`); process.exit(1); });
server.listen(0, '127.0.0.1', () => process.stdout.write(`READY ${server.address().port}\n`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), Number(args.lifetime) * 1000);
