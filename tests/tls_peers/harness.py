"""Running TLS peers for the tests: certificates, servers, a loopback capture, clients, browsers.

Everything binds 127.0.0.1, is bounded in time and stops by itself: servers stop when their stdin
closes (or after a lifetime), tcpdump is stopped with SIGINT, clients and browsers run under
deadlines and are killed (by their own process id) when the test is done with them.
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class PeerError(RuntimeError):
    """A peer did not start, failed or timed out; the message says which and why."""


def missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- certificates -------------------------------------------------------------------------------


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


# -- processes ----------------------------------------------------------------------------------


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    result: list[bytes] = []

    def read() -> None:
        assert proc.stdout is not None
        result.append(proc.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


class Server:
    """A server subprocess that prints ``READY <details>`` and stops when its stdin closes."""

    def __init__(self, cmd: Sequence[str], workdir: Path, name: str, timeout: float = 20) -> None:
        self.cmd = list(cmd)
        self.err = workdir / f"{name}.err"
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = ""

    def start(self) -> Server:
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        line = _readline(self.proc, self.timeout).decode(errors="replace").strip()
        if not line.startswith("READY "):
            self.stop()
            raise PeerError(f"{' '.join(self.cmd)} did not start ({line!r}): {tail(self.err)}")
        self.ready = line[6:]
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def hypercorn_server(
    workdir: Path, cert: Certificate, name: str, *extra: str, log: Path | None = None
) -> Server:
    cmd = [
        sys.executable, "-m", "tests.tls_peers.server",
        "--certfile", str(cert.cert), "--keyfile", str(cert.key), *extra,
    ]  # fmt: skip
    if log is not None:
        cmd += ["--log", str(log)]
    return Server(cmd, workdir, name)


def node_server(workdir: Path, cert: Certificate, configs: list[dict[str, str]]) -> Server:
    cmd = [
        "node", str(HERE / "node_server.mjs"), "--cert", str(cert.cert), "--key", str(cert.key),
        "--configs", json.dumps(configs),
    ]  # fmt: skip
    return Server(cmd, workdir, "node-server")


class Capture:
    """``tcpdump -i lo`` of some TCP ports into a pcap file."""

    def __init__(self, path: Path, ports: Sequence[int]) -> None:
        self.path = path
        self.ports = list(ports)
        self.err = path.with_suffix(".tcpdump.err")
        self.proc: subprocess.Popen[bytes] | None = None
        self.dropped: int | None = None

    def start(self) -> Capture:
        filt = " or ".join(f"tcp port {p}" for p in self.ports)
        cmd = ["tcpdump", "-i", "lo", "-n", "-s", "0", "-B", "65536", "--immediate-mode", "-U"]
        if os.geteuid() == 0:
            cmd += ["-Z", "root"]
        cmd += ["-w", str(self.path), filt]
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        end = time.monotonic() + 10
        while b"listening on" not in self.err.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise PeerError(f"tcpdump did not start: {tail(self.err)}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            time.sleep(0.2)  # the last packets (FIN/ACK) are written by now
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        match = re.search(r"(\d+) packets? dropped by kernel", tail(self.err))
        self.dropped = int(match.group(1)) if match else None


def inject_secrets(capture: Path, keylog: Path, out: Path) -> Path:
    cmd = ["editcap", "-F", "pcapng", "--inject-secrets", f"tls,{keylog}", str(capture), str(out)]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise PeerError(f"{' '.join(cmd)} failed: {proc.stderr.decode(errors='replace')}")
    return out


# -- browsers -----------------------------------------------------------------------------------


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    return None


def firefox_binary() -> str | None:
    for name in ("firefox-esr", "firefox"):
        if shutil.which(name):
            return name
    return None


def start_chromium(url: str, workdir: Path, keylog: Path) -> subprocess.Popen[bytes]:
    binary = chromium_binary()
    assert binary is not None
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--ignore-certificate-errors", f"--user-data-dir={profile}", url,
    ]  # fmt: skip
    env = dict(os.environ, SSLKEYLOGFILE=str(keylog))
    with open(workdir / "chromium.err", "wb") as err:
        return subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )


_FIREFOX_PREFS = """
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("app.update.enabled", false);
user_pref("app.normandy.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("network.http.http3.enable", false);
user_pref("network.dns.disableIPv6", true);
user_pref("security.enterprise_roots.enabled", false);
"""


def start_firefox(url: str, workdir: Path, keylog: Path, ca: Path) -> subprocess.Popen[bytes]:
    """A fresh profile that trusts the test CA (``certutil``), headless, keys to SSLKEYLOGFILE."""
    binary = firefox_binary()
    assert binary is not None
    profile = workdir / "firefox-profile"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "user.js").write_text(_FIREFOX_PREFS)
    db = f"sql:{profile}"
    for cmd in (
        ["certutil", "-N", "-d", db, "--empty-password"],
        ["certutil", "-A", "-n", "h2ws-test-ca", "-t", "C,,", "-i", str(ca), "-d", db],
    ):
        proc = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise PeerError(f"{' '.join(cmd)}: {proc.stderr.decode(errors='replace')}")
    cmd = [binary, "--headless", "--no-remote", "--profile", str(profile), url]
    env = dict(os.environ, SSLKEYLOGFILE=str(keylog), MOZ_HEADLESS="1")
    with open(workdir / "firefox.err", "wb") as err:
        return subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminates one process we started (and its process group's children die with it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# -- tshark -------------------------------------------------------------------------------------


def tshark_tls_streams(
    capture: Path, keylog: Path | None, count: int
) -> dict[int, tuple[str, bytes, bytes]]:
    """``tshark -q -z follow,tls,raw,N`` for N < count, in one pass:
    {tcp.stream: (address of node 0, bytes node 0 sent, bytes node 1 sent)}."""
    cmd = ["tshark", "-n", "-r", str(capture), "-q"]
    if keylog is not None:
        cmd += ["-o", f"tls.keylog_file:{keylog}"]
    for n in range(count):
        cmd += ["-z", f"follow,tls,raw,{n}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise PeerError(f"tshark failed: {proc.stderr[-2000:]}")
    out: dict[int, tuple[str, bytes, bytes]] = {}
    rule = "=" * 67
    for block in proc.stdout.split(rule + "\nFollow: tls,raw\n")[1:]:
        lines = block.splitlines()
        stream = int(lines[0].split()[-1])
        node0 = lines[1].split(": ", 1)[1]
        a, b = bytearray(), bytearray()
        for line in lines[3:]:
            if line.startswith(rule):
                break
            if line.startswith("\t"):
                b += bytes.fromhex(line.strip())
            elif line.strip():
                a += bytes.fromhex(line.strip())
        out[stream] = (node0, bytes(a), bytes(b))
    return out
