#!/usr/bin/env bash
# Memory under hostile cardinality: N requests (default 10^6), every one to a distinct
# path, through a release prescale with the profiler on, in front of an nginx upstream.
# Prints the proxy's RSS after every tenth of the run and the metric label counts.
# Everything on 127.0.0.1; bounded by N; all processes stopped on exit.
#
#   bash benches/memory.sh                  # N=1000000 distinct paths (h2load)
#   N=200000 bash benches/memory.sh
#   MODE=headers bash benches/memory.sh     # N requests each with a distinct path, source
#                                           # identity (x-client-id) and trace id (wrk + Lua)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000000}
MODE=${MODE:-paths}
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
profiler: { refit_interval: 10s, min_samples: 200, source_header: x-client-id }
policies:
  tiers: { trusted_sources: ["127.0.0.1/32"] }
  sources: { rate_limit: { rps: 100000, burst: 100000 }, top_k: 1024 }
  admission: { enabled: false }
YML

(cd "$ROOT" && cargo build --release --bin prescale >&2)
nginx -c "$WORK/nginx.conf" & PIDS+=($!)
RUST_LOG=warn "$ROOT/target/release/prescale" run --config "$WORK/prescale.yaml" 2>"$WORK/prescale.log" & PS=$!; PIDS+=($PS)
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/ready" && break; sleep 0.1; done

rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$PS/status"; }
per_step=$((N / STEPS)); per_conn=$((per_step / CONNS))
if [[ $MODE == headers ]]; then
    echo "prescale memory under $N requests, each a distinct path, x-client-id and traceparent ($(nproc) cpus)"
    echo "requests      RSS MiB"
    echo "0             $(rss)"
    sent=0
    # Every value is distinct (thread, step, counter); wrk runs until the proxy has
    # answered this step's share, then is stopped.
    for step in $(seq 1 $STEPS); do
        cat >"$WORK/distinct.lua" <<LUA
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
local letters = "abcdefghijklmnopqrstuvwxyz"
local function word(n)
  local s = ""
  repeat local d = n % 26; s = s .. string.sub(letters, d + 1, d + 1); n = (n - d) / 26 until n == 0
  return s
end
local n = 0
request = function()
  n = n + 1
  local who = $step * 100 + tid
  return wrk.format("GET", "/catalog/" .. word(who) .. "x" .. word(n) .. "/detail", {
    ["x-client-id"] = string.format("client-%d-%d", who, n),
    ["traceparent"] = string.format("00-%08x%08x0000000000000001-%08x%08x-01", who, n, n, who),
  })
end
LUA
        wrk -t2 -c$CONNS -d600s -s "$WORK/distinct.lua" "http://127.0.0.1:$PORT/" >"$WORK/wrk-$step.out" 2>&1 &
        WRK=$!
        for _ in $(seq 1 6000); do
            done_now=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^prescale_requests_total\{listener="inbound"/ { s += $NF } END { print s + 0 }')
            ((done_now >= step * per_step)) && break
            kill -0 "$WRK" 2>/dev/null || break
            sleep 0.1
        done
        kill -INT "$WRK" 2>/dev/null || true
        wait "$WRK" || true
        sent=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^prescale_requests_total\{listener="inbound"/ { s += $NF } END { print s + 0 }')
        printf '%-13s %s   (non-2xx this step: %s)\n' "$sent" "$(rss)" "$(awk '/Non-2xx/ { n = $NF } END { print n + 0 }' "$WORK/wrk-$step.out")"
    done
    sleep 2
    m=$(curl -s "http://127.0.0.1:$ADMIN/metrics")
    echo "metric series: $(grep -vc '^#' <<<"$m"); signature label values: $(grep -o 'signature="[^"]*"' <<<"$m" | sort -u | wc -l)"
    echo "series with a client id, path or trace id in a label: $(grep -v '^#' <<<"$m" | grep -c 'client-\|catalog\|00-0' || true)"
    echo "sources tracked: $(curl -s "http://127.0.0.1:$ADMIN/v1/tiers" | python3 -c 'import json,sys; s=json.load(sys.stdin)["sources"]; print(s["tracked"], "of", s["capacity"])')"
    echo "profiler samples: $(awk '/^prescale_profiler_samples_total/ { print $2 }' <<<"$m"), dropped: $(awk '/^prescale_profiler_dropped_samples_total/ { print $2 }' <<<"$m"), fanout untracked: $(awk '/^prescale_profiler_fanout_untracked_total/ { print $2 }' <<<"$m")"
    exit 0
fi
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
