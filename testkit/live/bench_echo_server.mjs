#!/usr/bin/env node
// WebSocket echo server for bench/bench_live.py: RFC 8441 over h2c (prior knowledge) on one
// port and HTTP/1.1 Upgrade on another, with the same echo code in the same process, so that
// the two ways a WebSocket crosses mitmproxy are compared against one server.  Node.js 20.
//
//   node bench_echo_server.mjs [--lifetime 600] [--cert C --key K]
//   prints READY <h2 port> <h1 port> [<h2 over TLS port> <h1 over TLS port>]; stops with stdin
// With --cert/--key, a third port serves the same RFC 8441 echo over TLS (ALPN h2 only), for
// intercept mode, whose HTTP/2 is mitmproxy's own and so needs TLS on both legs, and a fourth
// the HTTP/1.1 Upgrade echo over TLS (ALPN http/1.1), so that stock mitmdump's HTTP/1.1
// WebSocket relay is measured with TLS on both legs too: like with like.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';

import { FrameReader, OP, frame } from './node_ws.mjs';

let lifetime = 600;
let cert = null;
let key = null;
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--lifetime') lifetime = Number(process.argv[++i]);
  else if (process.argv[i] === '--cert') cert = fs.readFileSync(process.argv[++i]);
  else if (process.argv[i] === '--key') key = fs.readFileSync(process.argv[++i]);
}

// The echo: data frames back as they came (fragmentation kept), pongs for pings, the close
// handshake; `write` sends bytes, `end` ends the WebSocket's byte stream.
function echo(write, end) {
  let closed = false;
  return new FrameReader(({ fin, opcode, payload }) => {
    if (closed) return;
    if (opcode === OP.ping) write(frame(OP.pong, payload));
    else if (opcode === OP.pong) return;
    else if (opcode === OP.close) { closed = true; end(frame(OP.close, payload)); }
    else write(frame(opcode, payload, { fin }));
  });
}

function onStream(stream, headers) {
  stream.on('error', () => {});
  if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== 'websocket') {
    stream.respond({ ':status': 404 });
    stream.end();
    return;
  }
  stream.respond({ ':status': 200 });
  const reader = echo((b) => stream.write(b), (b) => stream.end(b));
  stream.on('data', (d) => reader.feed(d));
}
const h2 = http2.createServer({ settings: { enableConnectProtocol: true } });
h2.on('stream', onStream);
h2.on('session', (s) => s.on('error', () => {}));

function onUpgrade(req, socket, head) {
  socket.on('error', () => {});
  const key = req.headers['sec-websocket-key'];
  const accept = crypto.createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.setNoDelay(true);
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
    + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const reader = echo((b) => socket.write(b), (b) => socket.end(b));
  socket.on('data', (d) => reader.feed(d));
  if (head.length) reader.feed(head);
}
const notFound = (req, res) => { res.writeHead(404); res.end(); };
const h1 = http.createServer(notFound);
h1.on('upgrade', onUpgrade);

// Two ports, one process, one echo: Node's http2 server cannot take over a socket whose first
// bytes were already read, so the protocols are told apart by port rather than by sniffing.
const servers = [['h2', h2], ['h1', h1]];
if (cert && key) {
  const h2tls = http2.createSecureServer({ cert, key, settings: { enableConnectProtocol: true } });
  h2tls.on('stream', onStream);
  h2tls.on('session', (s) => s.on('error', () => {}));
  servers.push(['h2tls', h2tls]);
  const h1tls = https.createServer({ cert, key, ALPNProtocols: ['http/1.1'] }, notFound);
  h1tls.on('upgrade', onUpgrade);
  servers.push(['h1tls', h1tls]);
}
let ready = 0;
const ports = {};
for (const [name, server] of servers) {
  server.on('connection', (socket) => socket.setNoDelay(true));
  server.listen(0, '127.0.0.1', () => {
    ports[name] = server.address().port;
    if (++ready === servers.length) {
      const tls = ports.h2tls ? ` ${ports.h2tls} ${ports.h1tls}` : '';
      process.stdout.write(`READY ${ports.h2} ${ports.h1}${tls}\n`);
    }
  });
}
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), lifetime * 1000);
