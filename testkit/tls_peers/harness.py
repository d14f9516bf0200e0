"""Running TLS peers for the tests: certificates, servers, a loopback capture, clients, browsers.

Everything binds 127.0.0.1, is bounded in time and stops by itself: servers stop when their stdin
closes (or after a lifetime), tcpdump is stopped with SIGINT, clients and browsers run under
deadlines and are killed (by their own process id) when the test is done with them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from h2ws.testkit.live import browsers
from h2ws.testkit.peers.runner import (
    REPO,
    Capture,
    Certificate,
    PeerError,
    ReadyServer,
    inject_secrets,
    make_certificate,
)
from h2ws.testkit.peers.runner import _tail as tail
from h2ws.testkit.peers.runner import missing_tools as missing

HERE = Path(__file__).resolve().parent

__all__ = ["REPO", "Capture", "Certificate", "PeerError", "inject_secrets", "make_certificate",
           "missing", "tail"]  # fmt: skip


# -- processes ----------------------------------------------------------------------------------


def hypercorn_server(
    workdir: Path, cert: Certificate, name: str, *extra: str, log: Path | None = None
) -> ReadyServer:
    cmd = [
        sys.executable, "-m", "h2ws.testkit.tls_peers.server",
        "--certfile", str(cert.cert), "--keyfile", str(cert.key), *extra,
    ]  # fmt: skip
    if log is not None:
        cmd += ["--log", str(log)]
    return ReadyServer(cmd, workdir / f"{name}.err", name)


def node_server(workdir: Path, cert: Certificate, configs: list[dict[str, str]]) -> ReadyServer:
    cmd = [
        "node", str(HERE / "node_server.mjs"), "--cert", str(cert.cert), "--key", str(cert.key),
        "--configs", json.dumps(configs),
    ]  # fmt: skip
    return ReadyServer(cmd, workdir / "node-server.err", "node server")


# -- browsers -----------------------------------------------------------------------------------


def chromium_binary() -> str | None:
    return browsers.CHROMIUM


def firefox_binary() -> str | None:
    return browsers.FIREFOX


def start_chromium(url: str, workdir: Path, keylog: Path) -> subprocess.Popen[bytes]:
    """Chromium straight to the server (no proxy), keys to SSLKEYLOGFILE; returns at once."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SSLKEYLOGFILE=str(keylog))
    with open(workdir / "chromium.err", "wb") as err:
        return subprocess.Popen(
            browsers.chromium_command(url, workdir / "chromium-profile", None),
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def start_firefox(url: str, workdir: Path, keylog: Path, ca: Path) -> subprocess.Popen[bytes]:
    """Firefox in a fresh profile that trusts ``ca``, keys to SSLKEYLOGFILE; returns at once."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd, env = browsers.firefox_command(url, workdir / "firefox-profile", None, ca)
    env["SSLKEYLOGFILE"] = str(keylog)
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
