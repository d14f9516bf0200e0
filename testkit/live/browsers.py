"""Headless Chromium and Firefox ESR, pointed at a URL through a proxy (or not), bounded.

Each run gets a fresh profile in its work directory and is killed (its whole process group)
once ``done()`` says so or after ``timeout`` seconds.  Background traffic to Google or Mozilla
hosts is stopped by the proxy's guard; without a proxy it goes nowhere (closed network).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

CHROMIUM = shutil.which("chromium")
FIREFOX = shutil.which("firefox-esr")
CERTUTIL = shutil.which("certutil")


def _run(
    cmd: list[str], log: Path, done: Callable[[], bool], timeout: float, env: dict[str, str]
) -> bool:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )  # fmt: skip
    end = time.monotonic() + timeout
    ok = False
    try:
        while time.monotonic() < end:
            if done():
                ok = True
                time.sleep(0.5)  # let the close handshake go through
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    return ok


def chromium_command(url: str, profile: Path, proxy_port: int | None) -> list[str]:
    """Chromium 156 headless in a fresh ``profile``; certificate errors ignored (a test CA or
    mitmproxy's)."""
    assert CHROMIUM
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--ignore-certificate-errors",
        f"--user-data-dir={profile}",
    ]  # fmt: skip
    if proxy_port is not None:
        # Loopback bypasses proxies by default; <-loopback> takes that rule away.
        cmd += [f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>"]
    return [*cmd, url]


def chromium(
    url: str, workdir: Path, done: Callable[[], bool], proxy_port: int | None, timeout: float = 30
) -> bool:
    """Runs Chromium until ``done()`` or ``timeout``; True if ``done()`` said so."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = chromium_command(url, workdir / "profile", proxy_port)
    return _run(cmd, workdir / "chromium.log", done, timeout, dict(os.environ))


FIREFOX_PREFS = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.http.http3.enable": False,
    "extensions.update.enabled": False,
    "browser.region.network.url": "",
    "network.http.http2.websockets": True,
    "network.dns.disableIPv6": True,
    "security.enterprise_roots.enabled": False,
}


def firefox_command(
    url: str, profile: Path, proxy_port: int | None, ca: Path
) -> tuple[list[str], dict[str, str]]:
    """Firefox ESR 153 headless in a fresh ``profile`` that trusts ``ca`` (certutil): the
    command and its environment."""
    assert FIREFOX and CERTUTIL
    profile.mkdir(parents=True, exist_ok=True)
    subprocess.run([CERTUTIL, "-N", "-d", f"sql:{profile}", "--empty-password"], check=True,
                   capture_output=True, timeout=30)  # fmt: skip
    subprocess.run(
        [CERTUTIL, "-A", "-d", f"sql:{profile}", "-n", "h2ws-test", "-t", "C,,", "-i", str(ca)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    prefs = dict(FIREFOX_PREFS)
    if proxy_port is not None:
        prefs.update(
            {
                "network.proxy.type": 1,
                "network.proxy.http": "127.0.0.1",
                "network.proxy.http_port": proxy_port,
                "network.proxy.ssl": "127.0.0.1",
                "network.proxy.ssl_port": proxy_port,
                "network.proxy.no_proxies_on": "",
                "network.proxy.allow_hijacking_localhost": True,
            }
        )
    else:
        prefs["network.proxy.type"] = 0
    lines = [f"user_pref({_js(k)}, {_js(v)});" for k, v in prefs.items()]
    (profile / "user.js").write_text("\n".join(lines) + "\n")
    cmd = [FIREFOX, "--headless", "--no-remote", "--profile", str(profile), url]
    env = dict(
        os.environ, MOZ_DISABLE_AUTO_SAFE_MODE="1", MOZ_HEADLESS="1", HOME=str(profile.parent)
    )
    return cmd, env


def firefox(
    url: str,
    workdir: Path,
    done: Callable[[], bool],
    proxy_port: int | None,
    ca: Path,
    timeout: float = 40,
) -> bool:
    """Runs Firefox until ``done()`` or ``timeout``; True if ``done()`` said so."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd, env = firefox_command(url, workdir / "profile", proxy_port, ca)
    return _run(cmd, workdir / "firefox.log", done, timeout, env)


def _js(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
