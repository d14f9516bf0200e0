#!/usr/bin/env bash
# mitmproxy's own tests of its HTTP/1, HTTP/2 and WebSocket layers, with h2ws's intercept-mode
# patches applied (scripts/mitmproxy_suite_plugin.py): stock behaviour must be unchanged.
#
#   bash scripts/mitmproxy_suite.sh [GIT_DIR] [REF]
#
# Where the tests come from: mitmproxy publishes no sdist of 12.x on PyPI (`pip download
# mitmproxy==12.3.1 --no-binary :all:` finds none), so they come from a git checkout of
# mitmproxy: GIT_DIR (default: the bare snapshot /work/.mirror/mitmproxy+mitmproxy/repo), at REF
# (default: the tag of the installed version, else the nearest lower tag; printed).  Only
# test/ is taken from it; the code under test is the installed mitmproxy.  This downloads
# nothing, so it runs locally only and CI does not run it.
#
# H2WS_SUITE_PATCHES=0 runs the same tests unpatched, for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
GIT_DIR=${1:-/work/.mirror/mitmproxy+mitmproxy/repo}
if [ ! -d "$GIT_DIR" ]; then
    echo "mitmproxy_suite: no mitmproxy git repository at $GIT_DIR (clone one and pass it)" >&2
    exit 2
fi
INSTALLED=$($PY -c 'from mitmproxy.version import VERSION; print(VERSION)')
REF=${2:-}
if [ -z "$REF" ]; then
    REF=$(git --git-dir="$GIT_DIR" tag --list 'v[0-9]*' | INSTALLED="$INSTALLED" $PY -c '
import os, sys
def key(t):
    return tuple(int(p) for p in t.lstrip("v").split(".") if p.isdigit())
want = key(os.environ["INSTALLED"])
tags = [t.strip() for t in sys.stdin if t.strip() and key(t.strip()) <= want]
print(max(tags, key=key) if tags else "")')
fi
if [ -z "$REF" ]; then
    echo "mitmproxy_suite: no tag at or below $INSTALLED in $GIT_DIR" >&2
    exit 2
fi
echo "mitmproxy_suite: installed mitmproxy $INSTALLED, tests of $REF from $GIT_DIR"
WORK=build/mitmproxy-suite/$REF
rm -rf "$WORK" && mkdir -p "$WORK"
git --git-dir="$GIT_DIR" archive "$REF" test | tar -x -C "$WORK"
TESTS=(
    test/mitmproxy/proxy/layers/http/test_http.py
    test/mitmproxy/proxy/layers/http/test_http1.py
    test/mitmproxy/proxy/layers/http/test_http2.py
    test/mitmproxy/proxy/layers/http/test_http_version_interop.py
    test/mitmproxy/proxy/layers/test_websocket.py
    test/mitmproxy/proxy/layers/test_tcp.py
    test/mitmproxy/test_http.py
)
cd "$WORK"
PYTHONPATH="$OLDPWD/scripts:." nice -n 10 "$OLDPWD/$PY" -m pytest -q -p mitmproxy_suite_plugin \
    -p no:cacheprovider -o addopts= -o asyncio_mode=auto "${TESTS[@]}" "${@:3}"
