#!/usr/bin/env bash
# Memory under hostile cardinality: N requests (default 10^6), every one to a distinct
# path, through a release prescale with the profiler on, in front of an nginx upstream.
# Prints the proxy's RSS after every tenth of the run and the metric label counts.
# Everything on 127.0.0.1; bounded by N; all processes stopped on exit.
#
#   bash benches/memory.sh            # N=1000000
#   N=200000 bash benches/memory.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000000}
CONNS=10
STEPS=10
WORK=$(mktemp -d /tmp/prescale-mem.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); PORT=$(free_port); ADMIN=$(free_port)

cat >"$WORK/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/error.log;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$UP; location / { return 200 "ok\n"; } } }
NGX
cat >"$WORK/prescale.yaml" <<YML
admin: { address: 127.0.0.1:$ADMIN }
runtime: { worker_threads: 1 }
listeners:
  - { name: inbound, direction: inbound, address: 127.0.0.1:$PORT, cluster: app }
clusters:
  - { name: app, endpoints: ["127.0.0.1:$UP"] }
profiler: { refit_interval: 10s, min_samples: 200 }
YML

(cd "$ROOT" && cargo build --release --bin prescale >&2)
nginx -c "$WORK/nginx.conf" & PIDS+=($!)
RUST_LOG=warn "$ROOT/target/release/prescale" run --config "$WORK/prescale.yaml" 2>"$WORK/prescale.log" & PS=$!; PIDS+=($PS)
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/ready" && break; sleep 0.1; done

rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$PS/status"; }
per_step=$((N / STEPS)); per_conn=$((per_step / CONNS))
echo "prescale memory under $N distinct paths ($(nproc) cpus, load $(cut -d' ' -f1 /proc/loadavg))"
echo "requests      RSS MiB   route-like paths are letters only, so none folds into {id}"
echo "0             $(rss)"
sent=0
for step in $(seq 1 $STEPS); do
    # h2load replays one URI list per connection: one distinct file per connection.
    files=()
    for c in $(seq 1 $CONNS); do
        f="$WORK/uris-$c"
        python3 - "$step" "$c" "$per_conn" "$PORT" >"$f" <<'PY'
import sys
step, c, n, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
abc = "abcdefghijklmnopqrstuvwxyz"
def word(i):
    s = ""
    for _ in range(6):
        s += abc[i % 26]; i //= 26
    return s
base = (step * 100 + c) * n
for i in range(n):
    print(f"http://127.0.0.1:{port}/x/{word(base + i)}/{word(i * 7 + c)}")
PY
        files+=("$f")
    done
    loads=()
    for f in "${files[@]}"; do
        h2load -i "$f" -n "$per_conn" -c 1 -m 10 >"$f.out" 2>&1 &
        loads+=($!)
    done
    wait "${loads[@]}" || true
    ok=$(cat "$WORK"/uris-*.out | awk '/status codes:/ { s += $3 } END { print s + 0 }')
    sent=$((sent + per_step))
    printf '%-13s %s   (2xx this step: %s)\n' "$sent" "$(rss)" "$ok"
done
sleep 2
m=$(curl -s "http://127.0.0.1:$ADMIN/metrics")
echo "signature label values: $(grep -o 'signature="[^"]*"' <<<"$m" | sort -u | wc -l) (cap: max_signatures + 1 + total)"
echo "metric series: $(grep -vc '^#' <<<"$m")"
echo "profiler samples: $(awk '/^prescale_profiler_samples_total/ { print $2 }' <<<"$m"), dropped: $(awk '/^prescale_profiler_dropped_samples_total/ { print $2 }' <<<"$m")"
