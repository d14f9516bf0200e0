#!/usr/bin/env bash
# The README's main job: live RFC 8441 traffic through mitmdump + the h2ws addon -> tables ->
# summary -> report.html.  Ends by itself; fails loudly (non-zero exit, the reason on stderr) if
# any step does.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
VENV=.venv
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1. live: hypercorn <- mitmdump -s addon/addon.py <- Node.js http2 clients (RFC 8441) and HTTP/1.1 WebSockets"
$VENV/bin/python scripts/demo_live.py --out "$OUT" ${DEMO_ARGS:-}

echo "== 2. summary"
$VENV/bin/h2ws summary "$OUT/tables"

echo "== 3. report"
$VENV/bin/h2ws report "$OUT/tables" -o "$OUT/report.html"

echo
echo "tables:  $OUT/tables/   (Parquet part files, one folder per table), e.g.:"
echo "         $VENV/bin/python -c \"import duckdb; print(duckdb.sql(\\\"select kind, count(*) from '$OUT/tables/streams/*.parquet' group by 1\\\"))\""
echo "report:  $OUT/report.html"
echo "proxy:   $OUT/run/proxy/mitmdump.log"
