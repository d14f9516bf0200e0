"""TLS decryption between TCP reassembly and the decoder core: key logs in, plaintext chunks out.

Sans-IO, like the rest of the core: :class:`TlsLayer` is a filter over chunk events
(:mod:`h2ws.analysis.core.chunks`).  It decides per connection from the first bytes whether the
connection speaks TLS; a connection that does not is handed through untouched (one dict lookup
per event), so cleartext captures pay nothing.  A TLS connection is parsed record by record in
each direction; the ciphertext is reported as :class:`Wire` (byte counts stay TCP's), the
handshake becomes one :class:`TlsInfo`, and decrypted application data becomes :class:`Data` for
the same ``ConnectionDecoder`` that reads cleartext - which is why HTTP/2, RFC 8441 and HTTP/1.1
WebSockets decode the same either way.

The modules, one job each (TLS 1.2 RFC 5246 and TLS 1.3 RFC 8446 record decryption):

* :mod:`.keylog` -- NSS key logs: secrets by ``(label, client_random)``;
* :mod:`.schedule` -- cipher suites and key schedules (HKDF-Expand-Label, the TLS 1.2 PRF),
  nonces and additional data; the AEADs are ``cryptography``'s;
* :mod:`.handshake` -- record and handshake constants, hello and EncryptedExtensions parsing;
* :mod:`.midstream` -- connections whose handshake was not captured: the first record boundary
  and the key log secret found by trial decryption;
* :mod:`.records` -- the record state machine, :class:`TlsLayer`.

Secrets come from NSS key logs (SSLKEYLOGFILE, ``--tls-keylog``, ``keylog_filename``, pcapng
Decryption Secrets Blocks), looked up by the ClientHello's random.  Keys may be learnt after the
packets that need them (a Decryption Secrets Block further on in the file): a direction that needs
a key it does not have stops at that record and keeps what follows (bounded), and resumes when
:class:`KeyLog` learns the key.  Only when the connection ends without it is it "no keys".

Secrets never leave this package: not in reprs, exceptions nor diagnostics.  A client random is
public (it is sent in clear) and is named in diagnostics, so that users can find the key log
line that is missing.

Diagnostic codes (layer ``tls``; ``conn_id`` set):

- ``tls_no_keys`` (warning): the key log has no secret for this connection (or for part of it);
  the connection is a row with its handshake facts and byte counts.
- ``tls_bad_record_mac`` (error): a record failed authentication (wrong or mismatched keys, or
  corrupted bytes); that direction is not decrypted further.
- ``tls_unsupported_cipher`` (warning): a protocol version or cipher suite this module does not
  decrypt (CBC suites, TLS 1.0/1.1, ...); counted only.
- ``tls_midstream`` (warning): the capture starts after the ClientHello and no key log secret
  opens a direction's first records (:mod:`.midstream`: bounded trial decryption; TLS 1.2 never
  can); that direction, or the whole connection, is counted only.  The message says why.
- ``tls_midstream_decrypted`` (info): the capture starts after the ClientHello, and trial
  decryption found the secret, suite, key update generation and sequence number of a direction.
- ``tls_incomplete_handshake`` (warning): the connection ended before a ServerHello was seen.
- ``tls_alert`` (info for close_notify, warning, or error for fatal alerts).
- ``tls_gap`` (error): bytes of a direction were lost; the rest of that direction cannot be
  decrypted (record boundaries and sequence numbers are lost with them).
- ``tls_malformed`` (error): bytes that are not TLS records or handshake messages; that
  direction stops.
- ``tls_truncated`` (warning): a direction ended inside a TLS record.
- ``tls_resumed`` (info): an abbreviated TLS 1.2 handshake or a TLS 1.3 PSK handshake.
- ``tls_early_data_skipped`` (info): 0-RTT data the server rejected (its EncryptedExtensions
  say so), skipped as the server skipped it.  Accepted 0-RTT data is decoded like any other.
- ``tls_internal_error`` (error): a bug; the connection is counted only, the capture goes on.
"""

from h2ws.analysis.sources.tls.handshake import HRR_RANDOM
from h2ws.analysis.sources.tls.keylog import KeyLog
from h2ws.analysis.sources.tls.records import TlsLayer
from h2ws.analysis.sources.tls.schedule import SUITES, Suite, hkdf_expand_label, tls12_prf

__all__ = ["HRR_RANDOM", "SUITES", "KeyLog", "Suite", "TlsLayer", "hkdf_expand_label", "tls12_prf"]
