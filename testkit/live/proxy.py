"""mitmdump (or mitmweb) in a subprocess for the live tests: 127.0.0.1, a free port, bounded.

It always loads ``guard.py`` (no dial-out) and, unless ``addon=False`` (stock mitmproxy for the
comparisons), ``addon/addon.py`` from the repository.  Its CA lives in a fresh ``confdir``
(``ca_cert``: the PEM to trust); upstream certificates are verified against ``upstream_ca``.
``stop()`` sends SIGINT, so the addon's ``done`` hook writes the last rows; a proxy that
lingers is killed.  ``lifetime`` bounds a proxy whose test forgot it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MITMDUMP = REPO / ".venv" / "bin" / "mitmdump"
MITMWEB = REPO / ".venv" / "bin" / "mitmweb"
ADDON = REPO / "addon" / "addon.py"
GUARD = Path(__file__).resolve().parent / "guard.py"

_LISTENING = re.compile(rb"listening at (?:\[[^\]]*\]|[0-9.]+):(\d+)")


class ProxyError(RuntimeError):
    pass


class Mitmdump:
    def __init__(
        self,
        workdir: Path,
        *,
        mode: str = "regular",
        addon: bool = True,
        options: dict[str, object] | None = None,
        upstream_ca: Path | None = None,
        args: Iterable[str] = (),
        lifetime: float = 120.0,
        name: str = "mitmdump",
        tool: Path = MITMDUMP,
    ) -> None:
        self.tool = tool
        self.workdir = workdir
        self.mode = mode
        self.addon = addon
        self.options = dict(options or {})
        self.upstream_ca = upstream_ca
        self.args = list(args)
        self.lifetime = lifetime
        self.confdir = workdir / "confdir"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def command(self) -> list[str]:
        cmd = [str(self.tool), "--listen-host", "127.0.0.1", "--mode", f"{self.mode}@0"]
        cmd += ["--set", f"confdir={self.confdir}", "-s", str(GUARD)]
        if self.addon:
            cmd += ["-s", str(ADDON)]
        if self.upstream_ca is not None:
            cmd += ["--set", f"ssl_verify_upstream_trusted_ca={self.upstream_ca}"]
        for name, value in self.options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            cmd += ["--set", f"{name}={text}"]
        return cmd + self.args

    def start(self, timeout: float = 20.0) -> Mitmdump:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        end = time.monotonic() + timeout
        while True:
            match = _LISTENING.search(self.log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise ProxyError(f"mitmdump did not start: {self.log()[-3000:]}")
            time.sleep(0.05)
        self._watchdog = threading.Timer(self.lifetime, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.cancel()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: no ``done`` hook, as when mitmproxy is killed between flushes."""
        proc, self.proc = self.proc, None
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Mitmdump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
