#!/usr/bin/env bash
# The README's main job (`make demo`): `h2ws demo` from the checkout's .venv — the same code a
# pip user runs (h2ws/testkit/demo.py): live RFC 8441 traffic through mitmdump + the h2ws addon
# -> tables -> summary -> report.html.  Ends by itself; fails loudly (non-zero exit, the reason
# on stderr) if any step does.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
# shellcheck disable=SC2086  # DEMO_ARGS is a list of options
exec .venv/bin/h2ws demo -o "$OUT" ${DEMO_ARGS:-}
