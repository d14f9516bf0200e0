#!/usr/bin/env bash
# The README's main job: traffic → tables → summary → report.html.  Fails loudly if any step does.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
VENV=.venv
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1. captures: a multiplexing scenario (h2 + RFC 8441 + HTTP/1.1 fallback) and a real one"
$VENV/bin/python -m tests.report_fixtures.scenario "$OUT/mux_scenario.pcap"

echo "== 2. extract tables"
$VENV/bin/h2ws extract "$OUT/mux_scenario.pcap" samples/h2c_hypercorn_ws.pcap -o "$OUT/tables"

echo "== 3. summary"
$VENV/bin/h2ws summary "$OUT/tables"

echo "== 4. report"
$VENV/bin/h2ws report "$OUT/tables" -o "$OUT/report.html"

echo
echo "tables:  $OUT/tables/"
echo "report:  $OUT/report.html"
