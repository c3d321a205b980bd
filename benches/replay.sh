#!/usr/bin/env bash
# Throughput of `prescale replay` end to end (read + profile + forecast + simulate) on
# a large combined-format log made from the real Apache trace in ../shared/traces/:
# its 10 000 lines repeated N times (default 200: 2 M lines), each copy shifted by the
# trace's span so time only moves forward. Reports lines per minute.
#   benches/replay.sh [copies]
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-200}
src=../shared/traces/apache_access_semicomplete_2015-05-17_20.log
[ -f "$src" ] || { echo "skipping: $src is absent"; exit 0; }
cargo build --release --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$src" "$copies" > "$tmp/big.log" <<'PY'
import sys, datetime
src, copies = sys.argv[1], int(sys.argv[2])
lines = open(src, encoding="utf-8", errors="replace").read().splitlines()
fmt = "%d/%b/%Y:%H:%M:%S"
parsed = []
for l in lines:
    a = l.index("[") + 1; b = l.index(" ", a)
    parsed.append((l[:a], datetime.datetime.strptime(l[a:b], fmt), l[b:]))
span = parsed[-1][1] - parsed[0][1] + datetime.timedelta(seconds=1)
out = sys.stdout
for c in range(copies):
    shift = span * c
    for head, t, tail in parsed:
        out.write(head + (t + shift).strftime(fmt) + tail + "\n")
PY
lines=$(wc -l < "$tmp/big.log")
echo "input: $lines lines, $(du -h "$tmp/big.log" | cut -f1)"
start=$(date +%s.%N)
target/release/prescale replay --input "$tmp/big.log" --out "$tmp/out" --quiet | tail -8
end=$(date +%s.%N)
python3 -c "s=$end-$start; print(f'{$lines} lines in {s:.1f} s: {$lines/s*60/1e6:.2f} M lines/min end to end')"
python3 -c "import json;s=json.load(open('$tmp/out/summary.json'))['inputs'];print(f\"read phase: {s['read_seconds']:.1f} s ({s['lines_per_minute']/1e6:.2f} M lines/min), simulate: {s['simulate_seconds']:.1f} s\")"
