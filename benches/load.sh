#!/usr/bin/env bash
# Whole-proxy load benchmark, in one run:
#   direct to the upstream, through prescale, through nginx (reverse proxy) and through
#   haproxy (mode http), all on 127.0.0.1, each measured for
#   (a) throughput:   wrk, closed loop, HTTP/1.1 keep-alive;
#   (b) latency:      p50/p99 at a fixed arrival rate (open loop, examples/loadgen.rs);
#   (c) proxy CPU:    utime+stime of the proxy's processes (/proc/<pid>/stat) per request.
#
# Usage (from the repo root):   bash benches/load.sh
# Knobs (environment):          DURATION=10 RATE=2000 CONNS=50 WORKERS=1 SKIP_BUILD=0
#
# Every process it starts is killed on exit (trap); nothing listens beyond 127.0.0.1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
TEMPLATES=$ROOT/benches/load

DURATION=${DURATION:-10}   # seconds of each wrk run and of each fixed-rate run
RATE=${RATE:-2000}         # fixed arrival rate, requests/s
CONNS=${CONNS:-50}         # wrk connections
WORKERS=${WORKERS:-1}      # prescale worker_threads = nginx worker_processes = haproxy nbthread
UPSTREAM_WORKERS=1         # the upstream nginx
WARMUP=2                   # seconds of unmeasured wrk before each measured run
SKIP_BUILD=${SKIP_BUILD:-0}

if ((DURATION < 1 || DURATION > 60)); then echo "DURATION must be 1..60" >&2; exit 2; fi
if ((RATE < 1 || RATE > 50000)); then echo "RATE must be 1..50000" >&2; exit 2; fi

for tool in nginx haproxy wrk curl ss cargo getconf awk; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/prescale-load.XXXXXX)
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 1 30); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# --- ports ---------------------------------------------------------------------------

CHOSEN=" "
free_port() {
    local p
    for _ in $(seq 1 500); do
        p=$((20000 + RANDOM % 30000))
        [[ $CHOSEN == *" $p "* ]] && continue
        if ! ss -Htan "( sport = :$p or dport = :$p )" | grep -q .; then
            CHOSEN+="$p "
            echo "$p"
            return
        fi
    done
    echo "no free port" >&2
    exit 1
}

UP_PORT=$(free_port)
PS_PORT=$(free_port)
PS_ADMIN=$(free_port)
# A second prescale with the profiler off: the profiling-overhead pair.
PS0_PORT=$(free_port)
PS0_ADMIN=$(free_port)
NG_PORT=$(free_port)
HA_PORT=$(free_port)

# --- configs ---------------------------------------------------------------------------

# 100 bytes exactly.
BODY="prescale load benchmark upstream body: a fixed answer of one hundred bytes, no more and no less, ok."
[[ ${#BODY} == 100 ]] || { echo "body is ${#BODY} bytes" >&2; exit 1; }

render() { # template out dir port
    local dir=$3
    mkdir -p "$dir/tmp"
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$4|g" -e "s|@UPSTREAM_PORT@|$UP_PORT|g" \
        -e "s|@ADMIN_PORT@|$PS_ADMIN|g" -e "s|@WORKERS@|$WORKERS|g" \
        -e "s|@UPSTREAM_WORKERS@|$UPSTREAM_WORKERS|g" -e "s|@BODY@|$BODY|g" \
        "$TEMPLATES/$1" >"$2"
}

render upstream-nginx.conf "$WORK/up/nginx.conf" "$WORK/up" "$UP_PORT"
render nginx-proxy.conf "$WORK/ng/nginx.conf" "$WORK/ng" "$NG_PORT"
render haproxy.cfg "$WORK/ha/haproxy.cfg" "$WORK/ha" "$HA_PORT"
render prescale.yaml "$WORK/ps/prescale.yaml" "$WORK/ps" "$PS_PORT"
mkdir -p "$WORK/ps0"
render prescale.yaml "$WORK/ps0/prescale.yaml" "$WORK/ps0" "$PS0_PORT"
sed -i "s|127.0.0.1:$PS_ADMIN|127.0.0.1:$PS0_ADMIN|" "$WORK/ps0/prescale.yaml"
printf 'profiler:\n  enabled: false\n' >>"$WORK/ps0/prescale.yaml"

# --- build -------------------------------------------------------------------------------

BUILD_CMD=(cargo build --release --bin prescale --example loadgen)
if [[ $SKIP_BUILD != 1 ]]; then
    log "+ ${BUILD_CMD[*]}"
    "${BUILD_CMD[@]}" >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PRESCALE=$TARGET_DIR/release/prescale
LOADGEN=$TARGET_DIR/release/examples/loadgen
[[ -x $PRESCALE && -x $LOADGEN ]] || { echo "missing $PRESCALE or $LOADGEN" >&2; exit 1; }

# --- start everything ----------------------------------------------------------------------

start() { # name logfile cmd...
    local name=$1 logf=$2
    shift 2
    "$@" >"$logf" 2>&1 &
    PIDS+=($!)
    eval "${name}_PID=$!"
}

wait_http() { # url what pid
    for _ in $(seq 1 100); do
        kill -0 "$3" 2>/dev/null || { echo "$2 exited early" >&2; return 1; }
        [[ $(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$1" || true) == 200 ]] && return 0
        sleep 0.1
    done
    echo "$2 not ready at $1 after 10 s" >&2
    return 1
}

start UP "$WORK/up/stderr" nginx -p "$WORK/up" -e "$WORK/up/error.log" -c "$WORK/up/nginx.conf"
wait_http "http://127.0.0.1:$UP_PORT/" upstream "$UP_PID" || { cat "$WORK/up/stderr" "$WORK/up/error.log" >&2; exit 1; }
start PS "$WORK/ps/stderr" env RUST_LOG=warn "$PRESCALE" run --config "$WORK/ps/prescale.yaml"
wait_http "http://127.0.0.1:$PS_ADMIN/ready" prescale "$PS_PID" || { cat "$WORK/ps/stderr" >&2; exit 1; }
start PS0 "$WORK/ps0/stderr" env RUST_LOG=warn "$PRESCALE" run --config "$WORK/ps0/prescale.yaml"
wait_http "http://127.0.0.1:$PS0_ADMIN/ready" prescale-noprof "$PS0_PID" || { cat "$WORK/ps0/stderr" >&2; exit 1; }
start NG "$WORK/ng/stderr" nginx -p "$WORK/ng" -e "$WORK/ng/error.log" -c "$WORK/ng/nginx.conf"
wait_http "http://127.0.0.1:$NG_PORT/" nginx "$NG_PID" || { cat "$WORK/ng/stderr" "$WORK/ng/error.log" >&2; exit 1; }
start HA "$WORK/ha/stderr" haproxy -db -f "$WORK/ha/haproxy.cfg"
wait_http "http://127.0.0.1:$HA_PORT/" haproxy "$HA_PID" || { cat "$WORK/ha/stderr" >&2; exit 1; }

# --- measurement helpers -----------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)

# A process and its direct children (nginx: master + workers).
tree() {
    local p
    for p in "$@"; do
        echo "$p"
        cat "/proc/$p/task/"*/children 2>/dev/null | tr ' ' '\n' | grep . || true
    done
}

# utime+stime clock ticks, summed over the processes (threads included).
cpu_ticks() {
    local p total=0 t
    for p in $(tree "$@"); do
        t=$(sed -E 's/^.*\) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

field() { # key, from a loadgen RESULT line on stdin
    tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'
}

declare -A RPS WRKERR P50 P99 P999 LERR CPU_WRK CPU_FIXED UP_CPU LAG99 ACH

WRK_CMD="wrk -t1 -c$CONNS -d${DURATION}s --latency"
LOADGEN_ARGS="--rate $RATE --duration $DURATION --warmup 1 --timeout 5"

measure() { # name url pids-of-proxy (empty for direct)
    local name=$1 url=$2
    shift 2
    local pids=("$@")
    log "== $name ($url)"

    # (a) throughput, closed loop, after a short warm-up; CPU around the measured run.
    wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
    local c0=0 c1=0 u0 u1
    ((${#pids[@]})) && c0=$(cpu_ticks "${pids[@]}")
    u0=$(cpu_ticks "$UP_PID")
    $WRK_CMD "$url" >"$WORK/wrk-$name.txt"
    ((${#pids[@]})) && c1=$(cpu_ticks "${pids[@]}")
    u1=$(cpu_ticks "$UP_PID")
    local out reqs
    out=$(cat "$WORK/wrk-$name.txt")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    RPS[$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    local non2xx sockerr
    non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
    sockerr=$(awk '/Socket errors/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<<"$out")
    WRKERR[$name]=$(( ${non2xx:-0} + ${sockerr:-0} ))
    if ((${#pids[@]})); then
        CPU_WRK[$name]=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    else
        CPU_WRK[$name]="-"
    fi
    UP_CPU[$name]=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    log "   wrk: ${RPS[$name]} req/s ($reqs requests, ${WRKERR[$name]} errors)"

    # (b) latency at a fixed rate, open loop; CPU per request at that rate too.
    ((${#pids[@]})) && c0=$(cpu_ticks "${pids[@]}")
    # shellcheck disable=SC2086
    "$LOADGEN" --url "$url" $LOADGEN_ARGS >"$WORK/loadgen-$name.txt"
    ((${#pids[@]})) && c1=$(cpu_ticks "${pids[@]}")
    local res
    res=$(grep '^RESULT' "$WORK/loadgen-$name.txt")
    P50[$name]=$(field p50_us <<<"$res")
    P99[$name]=$(field p99_us <<<"$res")
    P999[$name]=$(field p999_us <<<"$res")
    LAG99[$name]=$(field lag_p99_us <<<"$res")
    ACH[$name]=$(field achieved_rps <<<"$res")
    LERR[$name]=$(( $(field non_2xx <<<"$res") + $(field errors <<<"$res") ))
    if ((${#pids[@]})); then
        # The window covers warm-up plus measured seconds at RATE.
        CPU_FIXED[$name]=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n=$((RATE * (DURATION + 1))) 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    else
        CPU_FIXED[$name]="-"
    fi
    log "   loadgen: p50 ${P50[$name]} us, p99 ${P99[$name]} us ($res)"
}

# --- header -------------------------------------------------------------------------------

echo "prescale whole-proxy load benchmark"
echo "  date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if git rev-parse --short HEAD >/dev/null 2>&1; then
    echo "  commit:    $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (+ uncommitted changes)')"
else
    echo "  commit:    n/a (not a git checkout)"
fi
echo "  host:      $(uname -sr), $(nproc) cpus, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "  load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (before)"
echo "  prescale:  $("$PRESCALE" --version) ($PRESCALE, built with: ${BUILD_CMD[*]}; $(rustc -V))"
echo "  nginx:     $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "  haproxy:   $(haproxy -v | head -1)"
echo "  wrk:       $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
echo "  upstream:  nginx, worker_processes $UPSTREAM_WORKERS, 'return 200' with a ${#BODY}-byte body, 127.0.0.1:$UP_PORT"
echo "  config:    benches/load/prescale.yaml (profiler at its default: enabled); 'noprof' is the same with profiler.enabled: false"
echo "  workers:   $WORKERS per proxy (prescale runtime.worker_threads=$WORKERS, nginx worker_processes=$WORKERS, haproxy nbthread=$WORKERS)"
echo "  proxies:   HTTP/1.1 keep-alive both sides; upstream pools: prescale pool_size 128,"
echo "             nginx 'keepalive 128', haproxy 'http-reuse always'; all add x-forwarded-for/-proto"
echo "  (a):       $WRK_CMD <url>   (after ${WARMUP}s unmeasured warm-up)"
echo "  (b):       $LOADGEN --url <url> $LOADGEN_ARGS   (open loop, latency from scheduled start)"
echo "  (c):       utime+stime from /proc/<pid>/stat (master + workers for nginx), CLK_TCK=$CLK_TCK,"
echo "             during the wrk run / during the fixed-rate run, divided by requests"
echo

measure direct "http://127.0.0.1:$UP_PORT/"
measure prescale "http://127.0.0.1:$PS_PORT/" "$PS_PID"
measure noprof "http://127.0.0.1:$PS0_PORT/" "$PS0_PID"
measure nginx "http://127.0.0.1:$NG_PORT/" "$NG_PID"
measure haproxy "http://127.0.0.1:$HA_PORT/" "$HA_PID"

# prescale must actually have proxied: its own counter, from its admin API.
PS_2XX=$(curl -s --max-time 5 "http://127.0.0.1:$PS_ADMIN/metrics" |
    awk '/^prescale_requests_total/ && /listener="inbound"/ && /code_class="2xx"/ { print $NF }')

# --- report -------------------------------------------------------------------------------

echo
printf '%-9s %10s %7s | %8s %8s %9s %7s %8s | %11s %11s | %9s\n' \
    target "wrk req/s" "errors" "p50 us" "p99 us" "p99.9 us" "errors" "lag p99" \
    "cpu us/req" "cpu us/req" "upstream"
printf '%-9s %10s %7s | %8s %8s %9s %7s %8s | %11s %11s | %9s\n' \
    "" "(c=$CONNS)" "" "@$RATE/s" "@$RATE/s" "@$RATE/s" "" "(gen)" "(wrk)" "(@$RATE/s)" "us/req"
printf -- '-%.0s' $(seq 1 118)
echo
for t in direct prescale noprof nginx haproxy; do
    printf '%-9s %10s %7s | %8s %8s %9s %7s %8s | %11s %11s | %9s\n' \
        "$t" "${RPS[$t]}" "${WRKERR[$t]}" "${P50[$t]}" "${P99[$t]}" "${P999[$t]}" "${LERR[$t]}" \
        "${LAG99[$t]}" "${CPU_WRK[$t]}" "${CPU_FIXED[$t]}" "${UP_CPU[$t]}"
done
echo
echo "prescale counted ${PS_2XX:-?} 2xx requests on its listener (metrics), i.e. the traffic went through it."
echo

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
# Ratio of two added latencies; meaningless unless both are positive.
ratio_added() { awk -v a="$1" -v b="$2" 'BEGIN { if (a <= 0 || b <= 0) print "n/a (one is not above direct: within noise)"; else printf "%.2f", a / b }'; }
diffv() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+d", a - b }'; }

ps_add50=$(diffv "${P50[prescale]}" "${P50[direct]}")
ps_add99=$(diffv "${P99[prescale]}" "${P99[direct]}")
ng_add99=$(diffv "${P99[nginx]}" "${P99[direct]}")
ha_add99=$(diffv "${P99[haproxy]}" "${P99[direct]}")
echo "ratios"
echo "  prescale / direct throughput:            $(ratio "${RPS[prescale]}" "${RPS[direct]}")"
echo "  prescale added latency vs direct:        p50 ${ps_add50} us, p99 ${ps_add99} us"
echo "  nginx    added latency vs direct:        p50 $(diffv "${P50[nginx]}" "${P50[direct]}") us, p99 ${ng_add99} us"
echo "  haproxy  added latency vs direct:        p50 $(diffv "${P50[haproxy]}" "${P50[direct]}") us, p99 ${ha_add99} us"
echo "  prescale / nginx   throughput:           $(ratio "${RPS[prescale]}" "${RPS[nginx]}")"
echo "  prescale / haproxy throughput:           $(ratio "${RPS[prescale]}" "${RPS[haproxy]}")"
echo "  prescale / nginx   CPU per request:      $(ratio "${CPU_WRK[prescale]}" "${CPU_WRK[nginx]}") (wrk), $(ratio "${CPU_FIXED[prescale]}" "${CPU_FIXED[nginx]}") (@$RATE/s)"
echo "  prescale / haproxy CPU per request:      $(ratio "${CPU_WRK[prescale]}" "${CPU_WRK[haproxy]}") (wrk), $(ratio "${CPU_FIXED[prescale]}" "${CPU_FIXED[haproxy]}") (@$RATE/s)"
echo "  profiling overhead (prescale / noprof) CPU per request: $(ratio "${CPU_WRK[prescale]}" "${CPU_WRK[noprof]}") (wrk), $(ratio "${CPU_FIXED[prescale]}" "${CPU_FIXED[noprof]}") (@$RATE/s)"
echo "  prescale / haproxy added p99:            $(ratio_added "$ps_add99" "$ha_add99")  (${ps_add99} us vs ${ha_add99} us)"
echo
echo "  load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (after; the machine is shared, so compare within one run)"
echo "  notes:     'lag p99' is the generator's own lateness (send time - scheduled time); when it is"
echo "             far below the p99 latency the fixed rate held. CPU per request under wrk is at"
echo "             saturation, where client, proxy and upstream share $(nproc) cpus."
