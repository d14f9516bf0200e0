"""NSS key logs (SSLKEYLOGFILE format): the secrets that decrypt TLS 1.2 and TLS 1.3.

One job: parse key log text (files, ``--tls-keylog``, pcapng Decryption Secrets Blocks) into
secrets looked up by ``(label, client_random)``.  Secrets never leave this object's lookups: its
repr counts them, never shows them.
"""

from __future__ import annotations

from typing import Final

#: The NSS key log labels that decrypt something (others, e.g. EXPORTER_SECRET, are ignored).
KEYLOG_LABELS: Final = frozenset(
    {
        "CLIENT_RANDOM",
        "CLIENT_EARLY_TRAFFIC_SECRET",
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    }
)


class KeyLog:
    """Secrets of an NSS key log, by ``(label, client_random)``.

    ``add`` takes whole key log texts (a file, a Decryption Secrets Block) and ignores whatever
    is not a well-formed line of a useful label, so comments, blank lines and foreign lines are
    harmless.  ``added`` lists the client randoms of new secrets in order, so that a
    :class:`TlsLayer` waiting for keys looks only at the connections that may now decrypt.
    """

    __slots__ = ("_by_label", "_secrets", "added")

    def __init__(self, text: bytes | str | None = None) -> None:
        self._secrets: dict[tuple[str, bytes], bytes] = {}
        #: The same secrets by label, then client random, in the order they were learnt.
        self._by_label: dict[str, dict[bytes, bytes]] = {}
        self.added: list[bytes] = []
        if text:
            self.add(text)

    def add(self, text: bytes | str) -> int:
        """Learn every secret in ``text``; returns how many were new."""
        if isinstance(text, str):
            text = text.encode("utf-8", "replace")
        new = 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            label = parts[0].decode("ascii", "replace")
            if label not in KEYLOG_LABELS:
                continue
            try:
                client_random = bytes.fromhex(parts[1].decode("ascii"))
                secret = bytes.fromhex(parts[2].decode("ascii"))
            except ValueError:
                continue
            if len(client_random) != 32 or not 16 <= len(secret) <= 64:
                continue
            key = (label, client_random)
            if self._secrets.get(key) != secret:
                self._secrets[key] = secret
                self._by_label.setdefault(label, {})[client_random] = secret
                self.added.append(client_random)
                new += 1
        return new

    def get(self, label: str, client_random: bytes) -> bytes | None:
        return self._secrets.get((label, client_random))

    def entries(self, label: str) -> list[tuple[bytes, bytes]]:
        """``(client_random, secret)`` of one label, in key log order: the candidates of a
        connection whose client random was not captured (:mod:`.midstream`)."""
        return list(self._by_label.get(label, {}).items())

    def has(self, label: str, client_random: bytes) -> bool:
        return (label, client_random) in self._secrets

    def __len__(self) -> int:
        return len(self._secrets)

    def __repr__(self) -> str:  # never the secrets
        return f"<KeyLog: {len(self._secrets)} secrets>"
