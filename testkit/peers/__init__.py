"""Real RFC 8441 peers for the live-capture tests: a hypercorn echo server, a Node.js ``http2``
client, Python clients (HTTP/1.1 Upgrade, h2c Upgrade), tcpdump captures and tshark readers."""
