#!/usr/bin/env bash
# Throughput of `prescale replay` end to end (read + profile + forecast + simulate) on
# a large combined-format log made from the real Apache trace in testdata/traces/:
# its 10 000 lines repeated N times (default 200: 2 M lines) over the same 83 hours,
# copy c shifted by c seconds (a busier site, same shape). Reports lines per minute.
#   benches/replay.sh [copies]
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-200}
src=testdata/traces/apache_access_semicomplete_2015-05-17_20.log
[ -f "$src" ] || { echo "error: $src is absent" >&2; exit 1; }
cargo build --release --quiet --bin prescale
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$src" "$copies" > "$tmp/big.log" <<'PY'
# Copy c is shifted by c seconds: the same 83 hours, `copies` times denser, in order.
import sys, datetime
src, copies = sys.argv[1], int(sys.argv[2])
lines = open(src, encoding="utf-8", errors="replace").read().splitlines()
fmt = "%d/%b/%Y:%H:%M:%S"
parsed = []
for l in lines:
    a = l.index("[") + 1; b = l.index(" ", a)
    parsed.append((datetime.datetime.strptime(l[a:b], fmt), l[:a], l[b:]))
rows = [(t + datetime.timedelta(seconds=c), h, tail) for c in range(copies) for t, h, tail in parsed]
rows.sort(key=lambda r: r[0])
out = sys.stdout
for t, h, tail in rows:
    out.write(h + t.strftime(fmt) + tail + "\n")
PY
lines=$(wc -l < "$tmp/big.log")
echo "input: $lines lines, $(du -h "$tmp/big.log" | cut -f1)"
start=$(date +%s.%N)
target/release/prescale replay --input "$tmp/big.log" --out "$tmp/out" --quiet | tail -8
end=$(date +%s.%N)
python3 -c "s=$end-$start; print(f'{$lines} lines in {s:.1f} s: {$lines/s*60/1e6:.2f} M lines/min end to end')"
python3 -c "import json;s=json.load(open('$tmp/out/summary.json'))['inputs'];print(f\"read phase: {s['read_seconds']:.1f} s ({s['lines_per_minute']/1e6:.2f} M lines/min), simulate: {s['simulate_seconds']:.1f} s\")"
