#!/usr/bin/env bash
# Sets up everything h2ws needs on a fresh Debian machine: system packages (as root, with apt-get),
# a Python >= 3.12 virtual environment in .venv, and the project with its extras.
# Idempotent: a second run only checks.  Used by `make`, and so by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------------------
# tshark and editcap (cross-checks, key injection), tcpdump (captures in tests), nodejs (a real
# RFC 8441 client and server), chromium and firefox-esr (real browsers, headless), certutil
# (trusting a test CA in a Firefox profile).
need=()
command -v tshark      >/dev/null || need+=(tshark)
command -v editcap     >/dev/null || need+=(wireshark-common)
command -v tcpdump     >/dev/null || need+=(tcpdump)
command -v node        >/dev/null || need+=(nodejs)
command -v chromium    >/dev/null || need+=(chromium)
command -v firefox-esr >/dev/null || need+=(firefox-esr)
command -v certutil    >/dev/null || need+=(libnss3-tools)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing ${need[*]}; run as root or install them with apt-get"; exit 1
    fi
    log "installing ${need[*]} with apt-get"
    # Another apt-get (unattended upgrades, a second set-up) may hold the dpkg lock: wait for
    # it (up to APT_LOCK_TIMEOUT seconds, default 600) instead of failing at once.
    lock=(-o "DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT:-600}")
    apt-get "${lock[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq "${need[@]}" >/dev/null
fi

# --- Python >= 3.12 ---------------------------------------------------------------------------
find_python() {
    local candidates=(python3.13 python3.12 python3)
    local c
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    # pyenv keeps other versions out of PATH unless selected.
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    for c in $(ls -d "$root"/versions/3.1[3-9]* "$root"/versions/3.12* 2>/dev/null | sort -rV); do
        if [[ -x "$c/bin/python3" ]]; then echo "$c/bin/python3"; return 0; fi
    done
    return 1
}

if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    py=$(find_python) || { log "no Python >= 3.12 found (tried python3.13, python3.12, python3, pyenv)"; exit 1; }
    log "creating .venv with $py ($("$py" --version))"
    rm -rf .venv
    "$py" -m venv .venv
fi

stamp=.venv/.h2ws-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    log "installing h2ws and its dependencies into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" >&2 || true
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[live,report,test]" 2>&1 | grep -v "is ignored" >&2 || true
    .venv/bin/python -c 'import h2ws.analysis.cli, mitmproxy, hypercorn' || { log "installation failed"; exit 1; }
    touch "$stamp"
fi
