#!/usr/bin/env node
// A real RFC 8441 client: Node.js 20 built-in `http2` (no npm packages).
//
// On ONE HTTP/2 connection (h2c prior knowledge, or TLS with --tls) it opens N extended-CONNECT
// WebSockets (:method CONNECT, :protocol websocket) interleaved with M ordinary GETs, sends a
// deterministic (seeded) mix of masked text / binary / fragmented / ping frames on every WebSocket,
// reads the echoes (RFC 6455 framing done here by hand), closes every WebSocket with a close
// handshake, and writes a JSON log of everything it sent and received, per stream.
//
//   node h2_client.mjs --port 8080 --log out.json [--ws 3] [--gets 3] [--seed 1] [--messages 3]
//        [--big 300000] [--ws-end rst|end] [--close-timeout 150] [--server-close]
//        [--tls --ca ca.pem --servername localhost --keylog k.txt] [--timeout 20000]
//        [--interval 0]
//
// --interval MS paces the traffic as an application would: each WebSocket sends one message
// (a fragmented one with its ping counts as one) every MS milliseconds instead of all at once,
// and GET j starts j * 5 * MS milliseconds after the connection is up.
//
// --server-close makes the last WebSocket ask the echo server to close first (?close_after=K);
// do not use it against hypercorn 0.18 over HTTP/2: the close reply the client must send then
// kills the connection (see endStream below).
//
// Exit codes: 0 ok; 2 bad usage; 3 the server did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL;
// 4 a WebSocket was refused or misbehaved; 5 overall timeout; 1 anything else.
//
// Log format (shared with the Python clients of this folder):
// { client, transport, host, port, local_port, seed, enable_connect_protocol,
//   websockets: [{ stream_id, path, status, response_headers, sent: [msg], received: [msg],
//                  close_sent: {code, reason}, close_received: {code, reason}, close_initiator,
//                  stream_end }],
//   requests:   [{ stream_id, method, path, status, body_length, body_sha256 }] }
// msg = { opcode: text|binary|ping|pong|close, payload_b64, length, fragments, close_code?,
//         close_reason? } in the order the messages COMPLETE on the wire (a ping sent between two
// fragments of a message comes before that message).

import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import tls from 'node:tls';

// ------------------------------------------------------------------------------------ arguments
function parseArgs(argv) {
  const opts = {
    host: '127.0.0.1', port: 0, tls: false, ca: null, servername: 'localhost', keylog: null,
    ws: 3, gets: 3, seed: 1, messages: 3, big: 300000, log: null, timeout: 20000,
    closeTimeout: 150, serverClose: false, wsEnd: 'rst', maxMessage: 100000, interval: 0,
  };
  const flags = new Set(['tls', 'serverClose']);
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) usage(`unexpected argument ${a}`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in opts)) usage(`unknown option ${a}`);
    if (flags.has(key)) { opts[key] = true; continue; }
    const v = argv[++i];
    if (v === undefined) usage(`${a} needs a value`);
    if (typeof opts[key] === 'number') {
      opts[key] = Number(v);
      if (!Number.isFinite(opts[key])) usage(`${a}: not a number`);
    } else {
      opts[key] = v;
    }
  }
  if (!opts.port) usage('--port is required');
  if (!opts.log) usage('--log is required');
  if (!['rst', 'end'].includes(opts.wsEnd)) usage('--ws-end is rst or end');
  return opts;
}

function usage(msg) {
  process.stderr.write(`h2_client: ${msg}\n`);
  process.exit(2);
}

function fail(code, msg) {
  process.stderr.write(`h2_client: ${msg}\n`);
  process.exit(code);
}

// ------------------------------------------------------------------------- deterministic random
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  constructor(seed) { this.next = mulberry32(seed); }
  int(lo, hi) { return lo + Math.floor(this.next() * (hi - lo + 1)); } // inclusive
  bytes(n) {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }
  // UTF-8 text of at least `n` bytes (multi-byte characters included, 4-byte ones too).
  text(n) {
    const alphabet = ['a', 'b', 'c', 'x', 'y', 'z', ' ', '0', '9', '{', '"', 'é', 'ß', 'ж', '€',
      '✓', '漢', '😀'];
    let s = '';
    while (Buffer.byteLength(s) < n) s += alphabet[this.int(0, alphabet.length - 1)];
    return Buffer.from(s, 'utf8');
  }
}

// ------------------------------------------------------------------------------ RFC 6455 frames
const OP = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };
const OPNAME = { 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

function encodeFrame(opcode, payload, fin, maskKey) {
  const len = payload.length;
  let header;
  if (len <= 125) {
    header = Buffer.alloc(2);
    header[1] = 0x80 | len;
  } else if (len <= 0xffff) {
    header = Buffer.alloc(4);
    header[1] = 0x80 | 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  header[0] = (fin ? 0x80 : 0) | opcode;
  const masked = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) masked[i] = payload[i] ^ maskKey[i & 3];
  return Buffer.concat([header, maskKey, masked]);
}

function closePayload(code, reason) {
  const r = Buffer.from(reason, 'utf8');
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

// Incremental parser of the server's frames (unmasked; a masked one is unmasked and noted).
class FrameParser {
  constructor(onMessage, onError) {
    this.buf = Buffer.alloc(0);
    this.partial = null; // {opcode, chunks, fragments}
    this.onMessage = onMessage;
    this.onError = onError;
  }
  feed(data) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0;
      const rsv = (b[0] >> 4) & 7;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2); off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2)); off = 10;
      }
      const maskKey = masked ? b.subarray(off, off + 4) : null;
      if (masked) off += 4;
      if (b.length < off + len) return;
      let payload = Buffer.from(b.subarray(off, off + len));
      this.buf = b.subarray(off + len);
      if (maskKey) for (let i = 0; i < len; i++) payload[i] ^= maskKey[i & 3];
      if (rsv !== 0) { this.onError(`server frame with RSV bits ${rsv} (no extension agreed)`); return; }
      if (masked) this.onError('server frame is masked (RFC 6455 5.1)');
      if (opcode >= 8) {
        this.onMessage(OPNAME[opcode] ?? `op${opcode}`, payload, 1);
      } else if (opcode === 0) {
        if (!this.partial) { this.onError('continuation frame without a message'); return; }
        this.partial.chunks.push(payload);
        this.partial.fragments += 1;
        if (fin) {
          const p = this.partial;
          this.partial = null;
          this.onMessage(OPNAME[p.opcode], Buffer.concat(p.chunks), p.fragments);
        }
      } else if (fin) {
        this.onMessage(OPNAME[opcode] ?? `op${opcode}`, payload, 1);
      } else {
        this.partial = { opcode, chunks: [payload], fragments: 1 };
      }
    }
  }
}

function logMessage(opcode, payload, fragments) {
  const m = { opcode, payload_b64: payload.toString('base64'), length: payload.length, fragments };
  if (opcode === 'close') {
    m.close_code = payload.length >= 2 ? payload.readUInt16BE(0) : null;
    m.close_reason = payload.length > 2 ? payload.subarray(2).toString('utf8') : (payload.length >= 2 ? '' : null);
  }
  return m;
}

// ------------------------------------------------------------------------------------ the plan
// Items: {kind:'message', opcode, payload, fragments:[sizes]} | {kind:'ping', payload}
//        | {kind:'fragmented-with-ping', opcode, payload, split, ping}
function planFor(index, rng, opts) {
  const items = [];
  const msg = (opcode, payload, nfrag = 1) => items.push({ kind: 'message', opcode, payload, nfrag });
  if (index === 0) {
    msg('text', Buffer.alloc(0)); // empty text
    msg('binary', Buffer.alloc(0)); // empty binary
    msg('text', Buffer.from('x'.repeat(125))); // 125: largest 7-bit length
    msg('binary', rng.bytes(126)); // 126: first 16-bit length
    msg('binary', rng.bytes(65535)); // 16-bit max
    msg('binary', rng.bytes(65536)); // first 64-bit length
  }
  msg('text', rng.text(rng.int(1, 120)));
  msg('binary', rng.bytes(rng.int(1, 125)));
  items.push({ kind: 'ping', payload: rng.bytes(rng.int(0, 125)) });
  msg('text', rng.text(rng.int(126, 6000)));
  msg('binary', rng.bytes(rng.int(65536, opts.maxMessage)));
  if (index % 2 === 1) {
    // A ping between the fragments of a text message (RFC 6455 5.4), text split inside a
    // multi-byte UTF-8 character on purpose.
    const payload = rng.text(rng.int(200, 3000));
    items.push({ kind: 'fragmented-with-ping', opcode: 'text', payload,
      split: [Math.floor(payload.length / 3) + 1, Math.floor(2 * payload.length / 3) + 1],
      ping: rng.bytes(rng.int(1, 16)) });
  } else {
    msg('text', rng.text(rng.int(30, 3000)), 3);
  }
  msg('binary', rng.bytes(rng.int(10, 40000)), 2);
  for (let k = 0; k < opts.messages; k++) {
    const size = Math.floor(Math.exp(rng.next() * Math.log(20000)));
    if (rng.next() < 0.5) msg('text', rng.text(size)); else msg('binary', rng.bytes(size));
  }
  // Never end on a ping: a server that closes after the last echo may drop a late pong.
  msg('text', Buffer.from(`last message of websocket ${index}`));
  return items;
}

function splitAt(buf, n) {
  const cuts = [];
  for (let k = 1; k < n; k++) cuts.push(Math.floor((buf.length * k) / n));
  const parts = [];
  let prev = 0;
  for (const c of cuts) { parts.push(buf.subarray(prev, c)); prev = c; }
  parts.push(buf.subarray(prev));
  return parts;
}

// ------------------------------------------------------------------------------------ a session
function connect(opts) {
  const authorityHost = opts.tls ? opts.servername : opts.host;
  const authority = `${authorityHost}:${opts.port}`;
  let session;
  if (opts.tls) {
    const url = `https://${authority}`;
    session = http2.connect(url, {
      createConnection: () => {
        const socket = tls.connect({
          host: opts.host, port: opts.port, servername: opts.servername, ALPNProtocols: ['h2'],
          ca: opts.ca ? fs.readFileSync(opts.ca) : undefined,
        });
        if (opts.keylog) {
          fs.writeFileSync(opts.keylog, '');
          socket.on('keylog', (line) => fs.appendFileSync(opts.keylog, line));
        }
        return socket;
      },
    });
  } else {
    session = http2.connect(`http://${authority}`);
  }
  return { session, authority };
}

function waitForSettings(session) {
  return new Promise((resolve, reject) => {
    session.once('remoteSettings', resolve);
    session.once('error', reject);
    session.once('close', () => reject(new Error('connection closed before the server SETTINGS')));
  });
}

function runGet(session, authority, scheme, path) {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'GET', ':scheme': scheme, ':authority': authority,
      ':path': path }, { endStream: true });
    const entry = { stream_id: null, method: 'GET', path, status: null, body_length: 0 };
    const hash = crypto.createHash('sha256');
    req.on('response', (headers) => { entry.status = headers[':status']; });
    req.on('data', (chunk) => { entry.body_length += chunk.length; hash.update(chunk); });
    req.on('end', () => {
      entry.stream_id = req.id;
      entry.body_sha256 = hash.digest('hex');
      resolve(entry);
    });
    req.on('error', reject);
  });
}

function runWebSocket(session, authority, scheme, index, rng, opts, serverClose) {
  const items = planFor(index, rng, opts);
  const dataCount = items.filter((i) => i.kind !== 'ping').length;
  const path = serverClose ? `/ws/${index}?close_after=${dataCount}` : `/ws/${index}`;
  const entry = { stream_id: null, path, status: null, response_headers: null, sent: [],
    received: [], close_sent: null, close_received: null,
    close_initiator: serverClose ? 'server' : 'client', stream_end: null, errors: [] };
  const mask = () => rng.bytes(4);

  return new Promise((resolve, reject) => {
    const abort = new AbortController();
    const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket',
      ':scheme': scheme, ':path': path, ':authority': authority,
      'sec-websocket-version': '13' }, { endStream: false, signal: abort.signal });
    let expected = 0; // echoes + pongs still to come
    let unsent = items.length; // with --interval, items not written yet
    let closeSent = false;
    let serverEnded = false;
    let done = false;
    let streamId = null;
    const finish = (how) => {
      if (done) return;
      done = true;
      entry.stream_end = how;
      entry.stream_id = streamId ?? stream.id;
      resolve(entry);
    };
    const sendClose = (code, reason) => {
      if (closeSent) return;
      closeSent = true;
      const payload = closePayload(code, reason);
      stream.write(encodeFrame(OP.close, payload, true, mask()));
      entry.sent.push(logMessage('close', payload, 1));
      entry.close_sent = { code, reason };
    };
    const endStream = () => {
      // The close handshake is complete: end the HTTP/2 stream.  Default: RST_STREAM(CANCEL)
      // (RFC 8441 section 5), because hypercorn 0.18 forgets a WebSocket stream once it has sent
      // its close frame and then fails the WHOLE connection on any further DATA on that stream,
      // an empty END_STREAM frame included.  stream.close(code) would send exactly that empty
      // END_STREAM frame before the RST_STREAM; aborting the request's AbortSignal sends only
      // RST_STREAM(CANCEL), as Firefox does.  With --ws-end end: END_STREAM, then RST_STREAM if
      // the server has not ended its side within --close-timeout ms.
      if (opts.wsEnd === 'rst') {
        abort.abort();
        finish('rst_stream:CANCEL');
        return;
      }
      stream.end();
      if (serverEnded) return;
      setTimeout(() => {
        if (!serverEnded && !stream.closed) {
          stream.close(http2.constants.NGHTTP2_CANCEL);
          finish('end_stream+rst_stream:CANCEL');
        }
      }, opts.closeTimeout);
    };
    const parser = new FrameParser((opcode, payload, fragments) => {
      entry.received.push(logMessage(opcode, payload, fragments));
      if (opcode === 'close') {
        const m = entry.received[entry.received.length - 1];
        entry.close_received = { code: m.close_code, reason: m.close_reason };
        if (!closeSent) {
          if (expected !== 0) entry.errors.push(`server closed with ${expected} echoes missing`);
          sendClose(m.close_code ?? 1000, '');
        }
        endStream();
      } else {
        expected -= 1;
        if (expected === 0 && unsent === 0 && !serverClose) {
          sendClose(1000, `bye from websocket ${index}`);
        }
      }
    }, (err) => entry.errors.push(err));

    stream.on('ready', () => { streamId = stream.id; });
    stream.on('response', (headers) => {
      entry.status = headers[':status'];
      entry.response_headers = Object.fromEntries(
        Object.entries(headers).filter(([k]) => !k.startsWith(':')));
      if (entry.status !== 200) {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(new Error(`websocket ${path}: status ${entry.status}`));
        return;
      }
      const send = (item) => {
        unsent -= 1;
        if (item.kind === 'ping') {
          stream.write(encodeFrame(OP.ping, item.payload, true, mask()));
          entry.sent.push(logMessage('ping', item.payload, 1));
          expected += 1;
        } else if (item.kind === 'fragmented-with-ping') {
          const [a, b] = item.split;
          stream.write(encodeFrame(OP[item.opcode], item.payload.subarray(0, a), false, mask()));
          stream.write(encodeFrame(OP.ping, item.ping, true, mask()));
          entry.sent.push(logMessage('ping', item.ping, 1));
          stream.write(encodeFrame(OP.continuation, item.payload.subarray(a, b), false, mask()));
          stream.write(encodeFrame(OP.continuation, item.payload.subarray(b), true, mask()));
          entry.sent.push(logMessage(item.opcode, item.payload, 3));
          expected += 2;
        } else {
          const parts = splitAt(item.payload, item.nfrag);
          parts.forEach((part, k) => {
            const op = k === 0 ? OP[item.opcode] : OP.continuation;
            stream.write(encodeFrame(op, part, k === parts.length - 1, mask()));
          });
          entry.sent.push(logMessage(item.opcode, item.payload, parts.length));
          expected += 1;
        }
      };
      if (opts.interval > 0) {
        items.forEach((item, k) => setTimeout(() => { if (!closeSent) send(item); },
          k * opts.interval));
      } else {
        items.forEach(send);
      }
    });
    stream.on('data', (chunk) => parser.feed(chunk));
    stream.on('end', () => {
      serverEnded = true;
      if (!closeSent) entry.errors.push('server ended the stream before the close handshake');
      if (stream.writableEnded) finish('end_stream_both');
    });
    stream.on('close', () => {
      if (!done) finish(serverEnded ? 'end_stream_both' : `closed:rst_code=${stream.rstCode}`);
    });
    stream.on('error', (err) => { if (err.name !== 'AbortError') entry.errors.push(String(err)); });
  });
}

// ------------------------------------------------------------------------------------------ main
async function main() {
  const opts = parseArgs(process.argv);
  const timer = setTimeout(() => fail(5, `timed out after ${opts.timeout} ms`), opts.timeout);
  timer.unref();
  const rng = new Rng(opts.seed);
  const scheme = opts.tls ? 'https' : 'http';
  const { session, authority } = connect(opts);
  session.on('error', (err) => fail(1, `session error: ${err.message}`));
  let finished = false;
  session.on('close', () => {
    if (!finished) fail(1, 'the server closed the connection before the client was done');
  });
  process.on('beforeExit', () => { if (!finished) fail(1, 'nothing left to wait for, not done'); });
  const settings = await waitForSettings(session);
  if (!settings.enableConnectProtocol) {
    session.destroy();
    fail(3, `server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (RFC 8441); its SETTINGS: ${JSON.stringify(settings)}`);
  }
  const log = {
    client: 'node-http2', node: process.version, transport: opts.tls ? 'h2' : 'h2c',
    host: opts.host, port: opts.port, local_port: session.socket.localPort, seed: opts.seed,
    enable_connect_protocol: true, server_settings: settings, websockets: [], requests: [],
  };
  const getPaths = ['/hello', `/big?n=${opts.big}`, '/missing'];
  const wsJobs = [];
  const getJobs = [];
  // Stream ids follow the order of the request() calls: WebSockets and GETs interleaved.
  for (let j = 0; j < Math.max(opts.ws, opts.gets); j++) {
    if (j < opts.ws) {
      const serverClose = opts.serverClose && j === opts.ws - 1;
      wsJobs.push(runWebSocket(session, authority, scheme, j, new Rng(opts.seed * 1000 + j), opts,
        serverClose));
    }
    if (j < opts.gets) {
      const path = getPaths[j % getPaths.length];
      const delay = j * 5 * opts.interval;
      getJobs.push(delay > 0
        ? new Promise((r) => setTimeout(r, delay)).then(() => runGet(session, authority, scheme, path))
        : runGet(session, authority, scheme, path));
    }
  }
  try {
    log.websockets = await Promise.all(wsJobs);
    log.requests = await Promise.all(getJobs);
  } catch (err) {
    session.destroy();
    fail(4, String(err.message ?? err));
  }
  finished = true;
  await new Promise((resolve) => session.close(resolve));
  fs.writeFileSync(opts.log, JSON.stringify(log, null, 1));
  const errors = log.websockets.flatMap((w) => w.errors.map((e) => `${w.path}: ${e}`));
  if (errors.length) fail(4, `websocket errors: ${errors.join('; ')}`);
  process.stderr.write(`h2_client: ${log.websockets.length} websockets, ${log.requests.length} GETs ok\n`);
}

main().catch((err) => fail(1, String(err?.stack ?? err)));
