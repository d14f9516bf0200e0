"""Running the peers: the hypercorn echo server, a loopback capture, and the clients.

Everything binds 127.0.0.1, picks a free port, is bounded in time and stops by itself: the
server stops when its stdin closes or after its lifetime, tcpdump is stopped with SIGINT (and
killed if it lingers), clients run under a timeout.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[2]

#: Seed of every client's message mix: the payloads are the same on every run.
SEED = 8441
#: The Node.js client's h2c scenario: WebSockets and GETs interleaved on one connection.
NODE_WEBSOCKETS = 3
NODE_GETS = 3
PEERS = Path(__file__).resolve().parent
NODE_CLIENT = PEERS / "h2_client.mjs"


class PeerError(RuntimeError):
    """A peer did not start, failed, or timed out; the message says which and why."""


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------------------------- certificate


@dataclass
class Certificate:
    cert: Path
    key: Path
    ca: Path


def make_certificate(directory: Path) -> Certificate:
    """A throw-away CA and an ECDSA P-256 leaf for ``localhost`` and 127.0.0.1, made at test
    time (nothing is committed).  Key identifiers are included: Python 3.13's default
    verification (``VERIFY_X509_STRICT``) and NSS want them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h2ws TLS test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    out = Certificate(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
    out.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return out


# --------------------------------------------------------------------------------------- server


class ReadyServer:
    """A server subprocess, started from the repository root, that prints ``READY <details>``
    on stdout once it accepts connections and stops by itself when its stdin closes (the
    parent went away) or after its own lifetime.  ``ready`` is the details; ``port`` their
    first number, when they start with one."""

    def __init__(self, cmd: Sequence[str], err: Path, name: str, timeout: float = 20.0) -> None:
        self.cmd = list(cmd)
        self.err = err
        self.name = name
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = ""
        self.port = 0

    def start(self) -> Self:
        self.err.parent.mkdir(parents=True, exist_ok=True)
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        line = _readline_with_timeout(self.proc, self.timeout) or b""
        text = line.decode(errors="replace").strip()
        if not text.startswith("READY "):
            self.stop()
            raise PeerError(f"{self.name} did not start (got {line!r}): {_tail(self.err)}")
        self.ready = text[6:]
        first = self.ready.split(" ", 1)[0]
        self.port = int(first) if first.isdigit() else 0
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()  # the server's shutdown trigger
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EchoServer(ReadyServer):
    """``testkit/peers/echo_app.py`` under hypercorn in a subprocess on 127.0.0.1:<free port>."""

    def __init__(
        self,
        workdir: Path,
        certificate: Certificate | None = None,
        lifetime: float = 300.0,
        start_timeout: float = 20.0,
    ) -> None:
        cmd = [sys.executable, "-m", "h2ws.testkit.peers.echo_app", "--lifetime", str(lifetime)]
        if certificate:
            cmd += ["--certfile", str(certificate.cert), "--keyfile", str(certificate.key)]
        err = workdir / ("server-tls.err" if certificate else "server.err")
        super().__init__(cmd, err, "echo server", start_timeout)
        self.certificate = certificate  # the clients trust its CA


def _readline_with_timeout(proc: subprocess.Popen[bytes], timeout: float) -> bytes | None:
    result: list[bytes] = []

    def read() -> None:
        assert proc.stdout is not None
        result.append(proc.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else None


# -------------------------------------------------------------------------------------- capture

_TCP_STATES_DONE = {"06", "07", "0A"}  # TIME_WAIT, CLOSE, LISTEN


def _open_connections(port: int) -> int:
    """Sockets on ``port`` (either end) still in a state that can put packets on the wire."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, state = parts[1], parts[2], parts[3]
            ports = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
            if port in ports and state not in _TCP_STATES_DONE:
                count += 1
    return count


def wait_connections_closed(port: int, timeout: float = 3.0) -> bool:
    """Waits until every TCP connection on ``port`` has finished its close handshake."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _open_connections(port) == 0:
            return True
        time.sleep(0.02)
    return False


class Capture:
    """``tcpdump -i lo`` of one TCP port (or several) into a pcap file, started and stopped cleanly.

    ``start()`` returns once tcpdump really captures (its "listening on" line); ``stop()`` waits
    for the connections on the port to finish closing, lets the last packets through, then
    SIGINTs tcpdump and reads its statistics (``dropped`` > 0 means the capture is incomplete).
    """

    def __init__(self, path: Path, port: int | Sequence[int], start_timeout: float = 10.0) -> None:
        self.path = path
        self.ports = [port] if isinstance(port, int) else list(port)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = path.with_suffix(".tcpdump.err")
        self.captured: int | None = None
        self.dropped: int | None = None

    def start(self) -> Capture:
        cmd = ["tcpdump", "-i", "lo", "-n", "-s", "0", "-B", "65536", "--immediate-mode", "-U"]
        if os.geteuid() == 0:
            cmd += ["-Z", "root"]  # keep root: write into root-only temporary directories
        cmd += ["-w", str(self.path), " or ".join(f"tcp port {p}" for p in self.ports)]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        end = time.monotonic() + self.start_timeout
        while b"listening on" not in self.stderr_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise PeerError(
                    f"tcpdump did not start: {' '.join(cmd)}: {_tail(self.stderr_path)}"
                )
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            for port in self.ports:
                wait_connections_closed(port)
            time.sleep(0.1)  # --immediate-mode: the last packets are written by now
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        err = _tail(self.stderr_path)
        captured = re.search(r"(\d+) packets? captured", err)
        dropped = re.search(r"(\d+) packets? dropped by kernel", err)
        self.captured = int(captured.group(1)) if captured else None
        self.dropped = int(dropped.group(1)) if dropped else None

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -------------------------------------------------------------------------------------- clients


def run_client(cmd: list[str], log: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Runs a client to completion (bounded) and returns its JSON log."""
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"client timed out after {timeout} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise PeerError(
            f"client failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stderr.decode(errors='replace')[-4000:]}"
        )
    result: dict[str, Any] = json.loads(log.read_text())
    return result


def node_client_cmd(port: int, log: Path, **options: Any) -> list[str]:
    """``node h2_client.mjs`` with ``--option value`` for each keyword (True: a bare flag)."""
    cmd = ["node", str(NODE_CLIENT), "--port", str(port), "--log", str(log)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value not in (False, None):
            cmd += [flag, str(value)]
    return cmd


def python_client_cmd(module: str, port: int, log: Path, *args: str) -> list[str]:
    """``python -m h2ws.testkit.peers.<module>`` with extra ``args``."""
    return [
        sys.executable,
        "-m",
        f"h2ws.testkit.peers.{module}",
        "--port",
        str(port),
        "--log",
        str(log),
        *args,
    ]


# ------------------------------------------------------------------------------------ scenarios


@dataclass
class Scenario:
    """One capture of one client run against the echo server."""

    name: str
    capture: Path
    port: int
    log: dict[str, Any]
    keylog: Path | None = None
    seconds: float = 0.0
    attempts: int = 1
    notes: list[str] = field(default_factory=list)


def missing_tools(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def capture_scenario(
    name: str,
    workdir: Path,
    server: EchoServer,
    cmd_for: Any,
    *,
    keylog: bool = False,
    attempts: int = 3,
    client_timeout: float = 60.0,
) -> Scenario:
    """Captures one client run: tcpdump on the server's port, the client to completion, the
    connections closed, tcpdump stopped.  ``cmd_for(log_path)`` builds the client command; with
    ``keylog`` the client writes TLS secrets to ``log_path`` with the suffix ``.keys``.
    A run whose capture lost packets (tcpdump's kernel drop counter) is repeated."""
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    for attempt in range(1, attempts + 1):
        started = time.monotonic()
        suffix = "" if attempt == 1 else f"-{attempt}"
        pcap = workdir / f"{name}{suffix}.pcap"
        log_path = workdir / f"{name}{suffix}.json"
        if not server.alive():
            raise PeerError(f"the echo server died: {_tail(server.err)}")
        wait_connections_closed(server.port)  # nothing of an earlier scenario in this capture
        with Capture(pcap, server.port) as capture:
            log = run_client(cmd_for(log_path), log_path, timeout=client_timeout)
        if capture.dropped:
            notes.append(f"attempt {attempt}: tcpdump dropped {capture.dropped} packets")
            continue
        if not capture.captured:
            raise PeerError(f"{name}: tcpdump captured nothing: {_tail(capture.stderr_path)}")
        keys = log_path.with_suffix(".keys") if keylog else None
        return Scenario(
            name, pcap, server.port, log, keys, time.monotonic() - started, attempt, notes
        )
    raise PeerError(f"{name}: every capture lost packets: {'; '.join(notes)}")


def inject_secrets(capture: Path, keylog: Path, out: Path) -> Path:
    """``editcap --inject-secrets``: a pcapng with the TLS key log as a Decryption Secrets Block,
    so that the capture decrypts on its own (tshark, and h2ws's pcapng reader)."""
    cmd = ["editcap", "-F", "pcapng", "--inject-secrets", f"tls,{keylog}", str(capture), str(out)]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise PeerError(f"{' '.join(cmd)} failed: {proc.stderr.decode(errors='replace')}")
    return out
