#!/usr/bin/env bash
# Where prescale's CPU goes per request: a `perf record -e cpu-clock` (software clock;
# no hardware counters needed) of the release binary while h2load sends N requests
# through it, set up as in benches/dataplane.sh (deploy/examples/sidecar.yaml as shipped,
# nginx upstream with a 1 KiB body, 64 in flight, generator on cpu 0, upstream + proxy on
# cpu 1). Prints the top symbols by self time, the share by component, and CPU per
# request.
#
# Usage (from the repo root):   bash benches/profile.sh
# Knobs: N=200000  PROTO=h1|h2c  PRESCALE=target/release/prescale  TOP=40  KEEP=0
#        HYPER=target/release/examples/hyper_dataplane: profile the hyper + tower
#        prototype instead (same config; HYPER_ARGS: its extra command-line options)
#        CALLGRAPH=1: record call graphs (--call-graph dwarf) for `perf report -G` on the
#        kept data (with KEEP=1); heavier, so the CPU per request it prints is higher
# Needs perf (Debian: linux-perf), nginx, h2load, taskset. Loopback only; every process
# started is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-200000}
PROTO=${PROTO:-h1}
TOP=${TOP:-40}
PRESCALE=${PRESCALE:-target/release/prescale}
HYPER=${HYPER:-}
HYPER_ARGS=${HYPER_ARGS:-}
if ((N < 1000 || N > 5000000)); then echo "N must be 1000..5000000" >&2; exit 2; fi
for tool in perf nginx h2load curl taskset python3; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
if [[ -n $HYPER ]]; then
    [[ -x $HYPER ]] || { echo "missing $HYPER (cargo build --release --example hyper_dataplane)" >&2; exit 2; }
else
    [[ -x $PRESCALE ]] || { echo "missing $PRESCALE (cargo build --release --bin prescale)" >&2; exit 2; }
fi

WORK=$(mktemp -d /tmp/prescale-profile.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port)
PORT=$(free_port)
ADMIN=$(free_port)
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
mkdir -p "$WORK/tmp"
cat >"$WORK/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/error.log warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
    client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
    server { listen 127.0.0.1:$UP backlog=4096;
        location / { default_type text/plain; return 200 "$BODY"; } } }
EOF
sed -e "s|127.0.0.1:9901|127.0.0.1:$ADMIN|" -e "s|127.0.0.1:4143|127.0.0.1:$PORT|" \
    -e "s|127.0.0.1:4140|127.0.0.1:$(free_port)|" -e "s|127.0.0.1:8080|127.0.0.1:$UP|" \
    -e "s|127.0.0.1:8081|127.0.0.1:$(free_port)|" deploy/examples/sidecar.yaml >"$WORK/prescale.yaml"

taskset -c 1 nginx -p "$WORK" -c "$WORK/nginx.conf" >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)
if [[ -n $HYPER ]]; then
    # shellcheck disable=SC2086
    taskset -c 1 "$HYPER" --config "$WORK/prescale.yaml" $HYPER_ARGS >"$WORK/prescale.out" 2>&1 &
    READY="http://127.0.0.1:$PORT/"
else
    taskset -c 1 env RUST_LOG=warn "$PRESCALE" run --config "$WORK/prescale.yaml" >"$WORK/prescale.out" 2>&1 &
    READY="http://127.0.0.1:$ADMIN/ready"
fi
PS=$!
PIDS+=($PS)
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$READY" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$PORT/" || { cat "$WORK/prescale.out" >&2; exit 1; }

case $PROTO in
    h1) ARGS=(--h1 -c 64 -m 1) ;;
    h2c) ARGS=(-c 4 -m 16) ;;
    *) echo "PROTO is h1 or h2c" >&2; exit 2 ;;
esac
taskset -c 0 timeout 60 h2load "${ARGS[@]}" -n $((N / 10)) "http://127.0.0.1:$PORT/" >/dev/null

ticks() { sed -E 's/^.*\) //' "/proc/$PS/stat" | awk '{ print $12 + $13 }'; }
t0=$(ticks)
perf record -e cpu-clock -F 2999 ${CALLGRAPH:+--call-graph dwarf,8192} -p "$PS" -o "$WORK/perf.data" 2>"$WORK/perf.err" &
PERF=$!
sleep 0.5
OUT=$(taskset -c 0 timeout 120 h2load "${ARGS[@]}" -n "$N" "http://127.0.0.1:$PORT/")
kill -INT "$PERF"
wait "$PERF" 2>/dev/null || true
t1=$(ticks)

echo "prescale profile (benches/profile.sh): $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -r), $(nproc) cpus"
if [[ -n $HYPER ]]; then
    echo "  binary:   $HYPER $HYPER_ARGS (hyper + tower prototype), deploy/examples/sidecar.yaml"
else
    echo "  binary:   $PRESCALE ($("$PRESCALE" --version)), deploy/examples/sidecar.yaml"
fi
echo "  load:     h2load ${ARGS[*]} -n $N ($PROTO), $(grep -E '^status codes' <<<"$OUT")"
echo "  record:   perf record -e cpu-clock -F 2999 -p <prescale>"
awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$N" \
    'BEGIN { printf "  prescale CPU per request (incl. perf overhead): %.1f us\n", t / hz * 1e6 / n }'
echo
REPORT=$(perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -E '^ +[0-9]')
echo "share by component (self time)"
awk '{
    pct = $1; sub("%", "", pct); dso = $2; sym = ""
    for (i = 4; i <= NF; i++) sym = sym " " $i
    c = "other"
    if (dso ~ /kernel/) c = "kernel (syscalls, TCP, scheduler)"
    else if (sym ~ /mi_|malloc|free|realloc|cfree|_int_/) c = "allocator"
    else if (sym ~ /memcpy|memmove|memset|memcmp/) c = "memcpy/memset"
    else if (sym ~ /pingora_core/) c = "pingora-core"
    else if (sym ~ /pingora_proxy/) c = "pingora-proxy"
    else if (sym ~ /pingora/) c = "pingora (other crates)"
    else if (sym ~ /tokio/) c = "tokio"
    else if (sym ~ /ndarray|linfa/) c = "profiler thread: signature re-fit (linfa k-means, ndarray)"
    else if (sym ~ /hyper_dataplane|prescale|profiler|policies/) c = "prescale (proxy, profiler, policies)"
    else if (sym ~ /h2::/) c = "h2"
    else if (sym ~ /hyper_util|tower/) c = "hyper-util, tower"
    else if (sym ~ /hyper::/) c = "hyper"
    else if (sym ~ /http::|httparse|pingora_http/) c = "http/httparse"
    else if (sym ~ /prescale|profiler|policies/) c = "prescale (proxy, profiler, policies)"
    else if (sym ~ /metrics/) c = "metrics"
    else if (sym ~ /bytes::/) c = "bytes"
    else if (dso ~ /^libc[.-]/) c = "libc (other)"
    share[c] += pct
} END { for (c in share) printf "  %6.2f%%  %s\n", share[c], c }' <<<"$REPORT" | sort -rn
echo
echo "share by thread"
perf report -i "$WORK/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
echo
echo "top $TOP symbols (self time)"
head -n "$TOP" <<<"$REPORT" | cut -c1-160
