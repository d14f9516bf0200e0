// Preloaded into testkit/peers/h2_client.mjs by the live tests (node --import this-file ...).
//
// Through a proxy, Node.js 20 sometimes never finishes `session.close()`: when the server's FIN
// arrives while the session is shutting down, its socket waits forever for an 'end' it already
// missed (NODE_DEBUG=http2,net shows "finishSessionClose socket end" and nothing after), so the
// client times out although every stream completed.  It happens through stock `mitmdump --mode
// reverse:tcp://` too (about 1 run in 30), so it is Node's, not the addon's.  This gives close()
// a bounded grace period, then destroys the raw socket: what a clean close would have done.
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';

const GRACE_MS = 500;
const sockets = new Set();
for (const mod of [net, tls]) {
  const original = mod.connect;
  mod.connect = function connectAndTrack(...args) {
    const socket = original.apply(this, args);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    return socket;
  };
}
const connect = http2.connect;
http2.connect = function connectWithCloseFallback(...args) {
  const session = connect.apply(this, args);
  const close = session.close.bind(session);
  session.close = (callback) => {
    close(callback);
    setTimeout(() => { for (const socket of sockets) socket.destroy(); }, GRACE_MS).unref();
  };
  return session;
};
