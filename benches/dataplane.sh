#!/usr/bin/env bash
# Data-plane cost, in one run: direct to the upstream, nginx, haproxy and prescale (the
# release binary with deploy/examples/sidecar.yaml as shipped, only its ports rewritten),
# each over HTTP/1.1 keep-alive and h2c (prior knowledge), 1 KiB response bodies, 64
# requests in flight. Pinned: the load generator on core 0, upstream + proxy on core 1.
#
# Per target and protocol it reports
#   added CPU per request  = (proxy + upstream) CPU / request  -  upstream CPU / request
#                            when hit directly with the same protocol (utime+stime from
#                            /proc/<pid>/stat, every process of the target);
#   throughput             h2load, closed loop, N requests;
#   p50 at a fixed rate    h2load --rps over 4 connections, per-request times from its
#                          --log-file (send to end of response), and per thread of the
#                          proxy: context switches and run time per request at that rate;
#   context switches       per request, all threads of the proxy (/proc/<pid>/task/*/status);
#   idle RSS               VmRSS of the proxy's processes after start and after the load;
# then the ratios against nginx and haproxy. Rounds are interleaved (every target once per
# round, in turn); the table gives the median and the range over rounds.
#
# Usage (from the repo root):   bash benches/dataplane.sh
# Knobs (environment):
#   N=100000        requests per throughput run (bounded; each run also stops after 120 s)
#   ROUNDS=2        interleaved rounds
#   RATE=1000       fixed request rate for the latency run, requests/s (4 connections)
#   RATE_SECS=5     measured seconds of the latency run (after 1 s of warm-up)
#   LAT_CONNS=4     connections of the latency run, RATE / LAT_CONNS requests/s each.
#                   h2load --rps sends each connection's due requests on a timer tick, so
#                   with 4 the requests of the 4 connections arrive together and each
#                   waits for the ones ahead of it; 1 takes that queueing out
#   PRESCALES="prescale=target/release/prescale"   space-separated name=binary pairs, e.g.
#                   PRESCALES="after=target/release/prescale before=/tmp/prescale-before"
#   HYPER=          space-separated name=binary pairs of the hyper + tower data-path
#                   prototype (examples/hyper_dataplane.rs; e.g.
#                   HYPER=hyper=target/release/examples/hyper_dataplane), measured beside the
#                   others with the same rewritten config (its inbound listener and cluster,
#                   tiers and profiler); empty: not measured. It has no admin API: ready
#                   when its listener answers. HYPER_ARGS_<name> (names made of letters,
#                   digits and _) adds command-line options to that one, e.g.
#                   HYPER="pool=$B legacy=$B" HYPER_ARGS_legacy="--upstream legacy".
#   SKIP_BUILD=0    1: use the binaries as they are
#   KEEP=0          1: keep the logs and configs
#
# Needs nginx, haproxy, h2load (Debian: nginx haproxy nghttp2-client), curl, taskset.
# Everything listens on 127.0.0.1 and every process started is stopped on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

N=${N:-100000}
ROUNDS=${ROUNDS:-2}
RATE=${RATE:-1000}
RATE_SECS=${RATE_SECS:-5}
LAT_CONNS=${LAT_CONNS:-4}
INFLIGHT=64
SKIP_BUILD=${SKIP_BUILD:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PRESCALES=${PRESCALES:-prescale=$TARGET_DIR/release/prescale}
HYPER=${HYPER:-}
GEN_CPU=0
SUT_CPU=1

if ((N < 1000 || N > 2000000)); then echo "N must be 1000..2000000" >&2; exit 2; fi
if ((ROUNDS < 1 || ROUNDS > 10)); then echo "ROUNDS must be 1..10" >&2; exit 2; fi
if ((RATE < 4 || RATE > 20000)); then echo "RATE must be 4..20000" >&2; exit 2; fi
if ((RATE_SECS < 1 || RATE_SECS > 60)); then echo "RATE_SECS must be 1..60" >&2; exit 2; fi
if ((LAT_CONNS < 1 || LAT_CONNS > 64 || RATE % LAT_CONNS)); then echo "LAT_CONNS must be 1..64 and divide RATE" >&2; exit 2; fi

for tool in nginx haproxy h2load curl ss taskset getconf awk timeout; do
    command -v "$tool" >/dev/null || {
        echo "missing tool: $tool (Debian: apt-get install -y nginx haproxy nghttp2-client curl util-linux)" >&2
        exit 2
    }
done
if (($(nproc) < 2)); then echo "needs 2 cpus (generator on $GEN_CPU, proxy on $SUT_CPU)" >&2; exit 2; fi

WORK=$(mktemp -d /tmp/prescale-dataplane.XXXXXX)
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

# --- build --------------------------------------------------------------------------------

BUILD_CMD=(cargo build --release --bin prescale)
[[ -z $HYPER ]] || BUILD_CMD+=(--example hyper_dataplane)
if [[ $SKIP_BUILD != 1 ]]; then
    log "+ ${BUILD_CMD[*]}"
    "${BUILD_CMD[@]}" >&2
fi
declare -A BIN
PS_NAMES=()
for pair in $PRESCALES; do
    name=${pair%%=*}
    BIN[$name]=${pair#*=}
    [[ -x ${BIN[$name]} ]] || { echo "missing prescale binary ${BIN[$name]}" >&2; exit 1; }
    PS_NAMES+=("$name")
done
HY_NAMES=()
declare -A HY_ARGS
for pair in $HYPER; do
    name=${pair%%=*}
    [[ $name =~ ^[A-Za-z0-9_]+$ ]] || { echo "HYPER name '$name': letters, digits and _ only" >&2; exit 2; }
    BIN[$name]=${pair#*=}
    [[ -x ${BIN[$name]} ]] || { echo "missing hyper prototype binary ${BIN[$name]}" >&2; exit 1; }
    var=HYPER_ARGS_$name
    HY_ARGS[$name]=${!var:-}
    HY_NAMES+=("$name")
done

# --- ports and configs ----------------------------------------------------------------------

# Ports below the kernel's ephemeral range (so no outgoing connection takes one between
# the check and the bind), never the same one twice in a run. Sets PORT (no subshell,
# so CHOSEN persists).
CHOSEN=" "
next_port() {
    local p
    for _ in $(seq 1 500); do
        p=$((20000 + RANDOM % 12000))
        [[ $CHOSEN == *" $p "* ]] && continue
        if ! ss -Htan "( sport = :$p or dport = :$p )" | grep -q .; then
            CHOSEN+="$p "
            PORT=$p
            return
        fi
    done
    echo "no free port" >&2
    exit 1
}
next_port; UP_H1=$PORT
next_port; UP_H2=$PORT
next_port; NG_H1=$PORT
next_port; NG_H2=$PORT
next_port; HA_H1=$PORT
next_port; HA_H2=$PORT

BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')

mkdir -p "$WORK/up/tmp" "$WORK/ng/tmp" "$WORK/ha"
NGINX_COMMON="daemon off; worker_processes 1; events { worker_connections 8192; }"
nginx_http() { # dir: no logs, long keep-alive (h2 too), temp files in the work dir
    echo "access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
    client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
    uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;"
}

# The upstream: nginx, one worker, a fixed 1 KiB answer; HTTP/1.1 on UP_H1, h2c on UP_H2
# (the direct h2c baseline).
cat >"$WORK/up/nginx.conf" <<EOF
$NGINX_COMMON pid $WORK/up/nginx.pid; error_log $WORK/up/error.log warn;
http { $(nginx_http "$WORK/up")
    server { listen 127.0.0.1:$UP_H1 backlog=4096; listen 127.0.0.1:$UP_H2 http2;
        location / { default_type text/plain; return 200 "$BODY"; } } }
EOF

# nginx as the proxy: keep-alive pool to the upstream, forwarding headers as prescale adds.
cat >"$WORK/ng/nginx.conf" <<EOF
$NGINX_COMMON pid $WORK/ng/nginx.pid; error_log $WORK/ng/error.log warn;
http { $(nginx_http "$WORK/ng")
    upstream backend { server 127.0.0.1:$UP_H1; keepalive 128; keepalive_requests 1000000; }
    server { listen 127.0.0.1:$NG_H1 backlog=4096; listen 127.0.0.1:$NG_H2 http2;
        location / { proxy_pass http://backend; proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme; } } }
EOF

cat >"$WORK/ha/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:$HA_H1
    bind 127.0.0.1:$HA_H2 proto h2
    http-request set-header X-Forwarded-Proto http
    default_backend be
backend be
    http-reuse always
    server upstream 127.0.0.1:$UP_H1
EOF

# prescale: the example as shipped; only its addresses change (the unused outbound
# cluster points at a closed port).
declare -A PS_PORT PS_ADMIN
for name in "${PS_NAMES[@]}" "${HY_NAMES[@]}"; do
    next_port; PS_PORT[$name]=$PORT
    next_port; PS_ADMIN[$name]=$PORT
    next_port; out_port=$PORT
    next_port; payments_port=$PORT
    mkdir -p "$WORK/ps-$name"
    sed -e "s|127.0.0.1:9901|127.0.0.1:${PS_ADMIN[$name]}|" \
        -e "s|127.0.0.1:4143|127.0.0.1:${PS_PORT[$name]}|" \
        -e "s|127.0.0.1:4140|127.0.0.1:$out_port|" \
        -e "s|127.0.0.1:8080|127.0.0.1:$UP_H1|" \
        -e "s|127.0.0.1:8081|127.0.0.1:$payments_port|" \
        deploy/examples/sidecar.yaml >"$WORK/ps-$name/prescale.yaml"
done

# --- start ------------------------------------------------------------------------------------

declare -A PID
start() { # name log cmd...
    local name=$1 logf=$2
    shift 2
    taskset -c "$SUT_CPU" "$@" >"$logf" 2>&1 &
    PIDS+=($!)
    PID[$name]=$!
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

start up "$WORK/up/stderr" nginx -p "$WORK/up" -c "$WORK/up/nginx.conf"
wait_http "http://127.0.0.1:$UP_H1/" upstream "${PID[up]}" || { cat "$WORK/up/"* >&2; exit 1; }
start nginx "$WORK/ng/stderr" nginx -p "$WORK/ng" -c "$WORK/ng/nginx.conf"
wait_http "http://127.0.0.1:$NG_H1/" nginx "${PID[nginx]}" || { cat "$WORK/ng/"* >&2; exit 1; }
start haproxy "$WORK/ha/stderr" haproxy -db -f "$WORK/ha/haproxy.cfg"
wait_http "http://127.0.0.1:$HA_H1/" haproxy "${PID[haproxy]}" || { cat "$WORK/ha/stderr" >&2; exit 1; }
for name in "${PS_NAMES[@]}"; do
    start "$name" "$WORK/ps-$name/stderr" env RUST_LOG=warn "${BIN[$name]}" run --config "$WORK/ps-$name/prescale.yaml"
    wait_http "http://127.0.0.1:${PS_ADMIN[$name]}/ready" "$name" "${PID[$name]}" || { cat "$WORK/ps-$name/stderr" >&2; exit 1; }
done
for name in "${HY_NAMES[@]}"; do
    # shellcheck disable=SC2086
    start "$name" "$WORK/ps-$name/stderr" "${BIN[$name]}" --config "$WORK/ps-$name/prescale.yaml" ${HY_ARGS[$name]}
    wait_http "http://127.0.0.1:${PS_PORT[$name]}/" "$name" "${PID[$name]}" || { cat "$WORK/ps-$name/stderr" >&2; exit 1; }
done
sleep 2

# --- measurement helpers ------------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
procs() { # a process and its children (nginx: master + worker)
    echo "$1"
    cat "/proc/$1/task/"*/children 2>/dev/null | tr ' ' '\n' | grep . || true
}
cpu_ticks() { # utime+stime, every thread of every process of the target
    local p total=0 t
    for p in $(procs "$1"); do
        t=$(sed -E 's/^.*\) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
ctx_switches() {
    local p
    for p in $(procs "$1"); do cat "/proc/$p/task/"*/status 2>/dev/null; done |
        awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'
}
thread_stats() { # pid: "tid comm voluntary involuntary run-ns" per thread (schedstat), sorted
    local p t
    for p in $(procs "$1"); do
        for t in /proc/"$p"/task/*; do
            printf '%s %s %s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm" 2>/dev/null)" \
                "$(awk '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 } END { print v + 0, n + 0 }' "$t/status" 2>/dev/null)" \
                "$(cut -d' ' -f1 "$t/schedstat" 2>/dev/null)"
        done
    done | awk 'NF == 5' | sort
}
rss_mib() {
    local p
    for p in $(procs "$1"); do cat "/proc/$p/status" 2>/dev/null; done |
        awk '/^VmRSS/ { s += $2 } END { printf "%.1f", s / 1024 }'
}

TARGETS=(direct nginx haproxy "${PS_NAMES[@]}" "${HY_NAMES[@]}")
url() { # target proto
    case $1:$2 in
        direct:h1) echo "http://127.0.0.1:$UP_H1/" ;;
        direct:h2c) echo "http://127.0.0.1:$UP_H2/" ;;
        nginx:h1) echo "http://127.0.0.1:$NG_H1/" ;;
        nginx:h2c) echo "http://127.0.0.1:$NG_H2/" ;;
        haproxy:h1) echo "http://127.0.0.1:$HA_H1/" ;;
        haproxy:h2c) echo "http://127.0.0.1:$HA_H2/" ;;
        *) echo "http://127.0.0.1:${PS_PORT[$1]}/" ;;
    esac
}
h2load_args() { # proto: 64 in flight either way
    case $1 in
        h1) echo "--h1 -c $INFLIGHT -m 1" ;;
        h2c) echo "-c 4 -m $((INFLIGHT / 4))" ;;
    esac
}

declare -A RSS0 RSS1
for t in "${TARGETS[@]}"; do [[ $t == direct ]] || RSS0[$t]=$(rss_mib "${PID[$t]}"); done

# results, one line per measurement: target proto round metric value
RES=$WORK/results.txt
: >"$RES"

throughput() { # target proto round
    local t=$1 proto=$2 r=$3 u pid args out
    u=$(url "$t" "$proto")
    args=$(h2load_args "$proto")
    # shellcheck disable=SC2086
    taskset -c "$GEN_CPU" timeout 60 h2load $args -n $((N / 10)) "$u" >/dev/null 2>&1 || true
    local up0 up1 c0=0 c1=0 s0=0 s1=0
    [[ $t == direct ]] || { c0=$(cpu_ticks "${PID[$t]}"); s0=$(ctx_switches "${PID[$t]}"); }
    up0=$(cpu_ticks "${PID[up]}")
    # shellcheck disable=SC2086
    out=$(taskset -c "$GEN_CPU" timeout 120 h2load $args -n "$N" "$u" 2>&1) || true
    up1=$(cpu_ticks "${PID[up]}")
    [[ $t == direct ]] || { c1=$(cpu_ticks "${PID[$t]}"); s1=$(ctx_switches "${PID[$t]}"); }
    local ok rps
    ok=$(awk '/^status codes:/ { print $3 }' <<<"$out")
    rps=$(awk '/^finished in/ { gsub(",", "", $4); printf "%.0f", $4 }' <<<"$out")
    if [[ ${ok:-0} != "$N" ]]; then
        log "   $t $proto: only ${ok:-0} of $N answered 2xx:"
        log "$(grep -E '^(requests|status codes|finished)' <<<"$out")"
    fi
    local n=${ok:-0}
    ((n > 0)) || n=1
    awk -v t="$t" -v p="$proto" -v r="$r" -v n="$n" -v hz="$CLK_TCK" -v c=$((c1 - c0)) \
        -v u=$((up1 - up0)) -v s=$((s1 - s0)) -v rps="${rps:-0}" -v ok="${ok:-0}" 'BEGIN {
            printf "%s %s %s rps %s\n", t, p, r, rps
            printf "%s %s %s ok %s\n", t, p, r, ok
            printf "%s %s %s up_us %.2f\n", t, p, r, u / hz * 1e6 / n
            printf "%s %s %s total_us %.2f\n", t, p, r, (c + u) / hz * 1e6 / n
            printf "%s %s %s cs %.3f\n", t, p, r, s / n
        }' >>"$RES"
    log "   $t $proto round $r: ${rps:-?} req/s, $(awk -v c=$((c1 - c0 + up1 - up0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", c / hz * 1e6 / n }') us CPU/req (proxy + upstream)"
}

latency() { # target proto: RATE requests/s over LAT_CONNS connections, per-request log
    local t=$1 proto=$2 u args
    u=$(url "$t" "$proto")
    args="-c $LAT_CONNS --rps $((RATE / LAT_CONNS))"
    [[ $proto == h1 ]] && args="--h1 $args"
    # shellcheck disable=SC2086
    taskset -c "$GEN_CPU" timeout 60 h2load $args -n "$RATE" "$u" >/dev/null 2>&1 || true
    local logf=$WORK/latency-$t-$proto.tsv n=$((RATE * RATE_SECS)) pid=${PID[$t]:-${PID[up]}}
    thread_stats "$pid" >"$WORK/threads0"
    # shellcheck disable=SC2086
    taskset -c "$GEN_CPU" timeout 120 h2load $args -n "$n" --log-file="$logf" "$u" >/dev/null 2>&1 || true
    thread_stats "$pid" >"$WORK/threads1"
    # per thread (the upstream's for direct): switches and run time per request at this rate
    join "$WORK/threads0" "$WORK/threads1" | awk -v t="$t" -v p="$proto" -v n="$n" '{
        v = ($7 - $3) / n; i = ($8 - $4) / n; c = ($9 - $5) / n / 1000
        if (v + i >= 0.005 || c >= 0.05) printf "%s %s %s %.3f %.3f %.1f\n", t, p, $2, v, i, c }' >>"$WORK/threads.txt"
    # h2load --rps sends each connection's due requests on a timer tick: a gap of more
    # than 2 ms between request starts begins a new burst. Median latency by position.
    sort -n "$logf" 2>/dev/null | awk '$2 >= 200 && $2 < 300 {
            if (n == 0 || $1 - prev > 2000) { b++; pos = 0 } pos++; prev = $1; n++
            print (pos > 5 ? 5 : pos), $3 } END { print 0, b + 0 }' | sort -k1,1n -k2,2n |
        awk -v t="$t" -v p="$proto" '$1 == 0 { b = $2; next }
            { v[$1, ++c[$1]] = $2 }
            END { printf "%s %s %d", t, p, b
                for (k = 1; k <= 5; k++) printf " %d:%s", c[k], c[k] ? v[k, int((c[k] + 1) / 2)] : "-"; print "" }' \
        >>"$WORK/bursts.txt"
    # columns: start (us since epoch), status, microseconds to the end of the response
    local p50 p99 ok
    ok=$(awk '$2 >= 200 && $2 < 300' "$logf" 2>/dev/null | wc -l)
    read -r p50 p99 < <(awk '$2 >= 200 && $2 < 300 { print $3 }' "$logf" 2>/dev/null | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan nan"; exit } i = int(NR * 0.99); if (i < 1) i = 1; print v[int((NR + 1) / 2)], v[i] }')
    echo "$t $proto 1 p50 $p50" >>"$RES"
    echo "$t $proto 1 p99 $p99" >>"$RES"
    echo "$t $proto 1 lat_ok $ok" >>"$RES"
    log "   $t $proto @${RATE}/s: p50 $p50 us, p99 $p99 us, $ok of $((RATE * RATE_SECS)) 2xx"
}

# --- header -------------------------------------------------------------------------------------

echo "prescale data-plane benchmark (benches/dataplane.sh)"
echo "  date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if git rev-parse --short HEAD >/dev/null 2>&1; then
    echo "  commit:    $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (+ uncommitted changes)')"
fi
echo "  host:      $(uname -sr), $(nproc) cpus, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "  load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (before)"
for name in "${PS_NAMES[@]}"; do
    echo "  $name: $("${BIN[$name]}" --version) (${BIN[$name]}), deploy/examples/sidecar.yaml, ports rewritten"
done
for name in "${HY_NAMES[@]}"; do
    echo "  $name: hyper + tower prototype (${BIN[$name]} ${HY_ARGS[$name]}), the same config: tiers and profiler on"
done
echo "  nginx:     $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes 1, keepalive 128 to the upstream"
echo "  haproxy:   $(haproxy -v | head -1 | awk '{ print $3 }'), nbthread 1, http-reuse always"
echo "  upstream:  nginx, worker_processes 1, 'return 200' with a ${#BODY}-byte body"
echo "  pinning:   generator on cpu $GEN_CPU; upstream and proxy on cpu $SUT_CPU (taskset)"
echo "  load:      h2load -n $N, h1: $(h2load_args h1), h2c: $(h2load_args h2c) (after $((N / 10)) unmeasured)"
echo "  latency:   h2load [--h1] -c $LAT_CONNS --rps $((RATE / LAT_CONNS)) -n $((RATE * RATE_SECS)) --log-file (after $RATE unmeasured)"
echo "  CPU:       utime+stime from /proc/<pid>/stat, CLK_TCK=$CLK_TCK; rounds: $ROUNDS, interleaved"
echo

for r in $(seq 1 "$ROUNDS"); do
    for proto in h1 h2c; do
        for t in "${TARGETS[@]}"; do
            log "== round $r, $t, $proto"
            throughput "$t" "$proto" "$r"
        done
    done
done
for proto in h1 h2c; do
    for t in "${TARGETS[@]}"; do latency "$t" "$proto"; done
done
sleep 2
for t in "${TARGETS[@]}"; do [[ $t == direct ]] || RSS1[$t]=$(rss_mib "${PID[$t]}"); done

# --- report -------------------------------------------------------------------------------------

# median over rounds of one metric (the middle value; the mean of the two middle ones)
med() { # target proto metric
    awk -v t="$1" -v p="$2" -v m="$3" '$1 == t && $2 == p && $4 == m { print $5 }' "$RES" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() { # target proto metric: "min–max" over rounds
    awk -v t="$1" -v p="$2" -v m="$3" '$1 == t && $2 == p && $4 == m { print $5 }' "$RES" | sort -g |
        awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.1f-%.1f", lo, hi }'
}
# added CPU per request of each round: total - the direct upstream's median, same protocol
added() { # target proto -> median
    local base
    base=$(med direct "$2" up_us)
    awk -v t="$1" -v p="$2" -v b="$base" '$1 == t && $2 == p && $4 == "total_us" { print $5 - b }' "$RES" |
        sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
added_range() {
    local base
    base=$(med direct "$2" up_us)
    awk -v t="$1" -v p="$2" -v b="$base" '$1 == t && $2 == p && $4 == "total_us" { print $5 - b }' "$RES" |
        sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.1f-%.1f", lo, hi }'
}

declare -A ADD P50
printf '%-12s | %-5s | %9s %-13s | %9s | %8s | %7s | %7s | %6s %6s\n' \
    target proto "added CPU" "us/req" "req/s" "ctx sw" "p50 us" "p99 us" "RSS0" "RSS1"
printf '%-12s | %-5s | %9s %-13s | %9s | %8s | %7s | %7s | %6s %6s\n' \
    "" "" "median" "(range)" "median" "/req" "@$RATE/s" "@$RATE/s" "MiB" "MiB"
printf -- '-%.0s' $(seq 1 106)
echo
for proto in h1 h2c; do
    for t in "${TARGETS[@]}"; do
        if [[ $t == direct ]]; then
            a="-" ar="(up $(range direct "$proto" up_us))"
        else
            a=$(awk -v v="$(added "$t" "$proto")" 'BEGIN { printf "%.1f", v }')
            ar="($(added_range "$t" "$proto"))"
        fi
        ADD[$t:$proto]=$a
        P50[$t:$proto]=$(med "$t" "$proto" p50)
        cs="-"
        [[ $t == direct ]] || cs=$(med "$t" "$proto" cs)
        printf '%-12s | %-5s | %9s %-13s | %9s | %8s | %7s | %7s | %6s %6s\n' \
            "$t" "$proto" "$a" "$ar" "$(med "$t" "$proto" rps)" "$cs" "${P50[$t:$proto]}" \
            "$(med "$t" "$proto" p99)" "${RSS0[$t]:--}" "${RSS1[$t]:--}"
    done
done
echo

for name in "${PS_NAMES[@]}"; do
    n2xx=$(curl -s --max-time 5 "http://127.0.0.1:${PS_ADMIN[$name]}/metrics" |
        awk '/^prescale_requests_total/ && /listener="inbound"/ && /code_class="2xx"/ { s += $NF } END { print s + 0 }')
    echo "$name counted $n2xx 2xx requests on its inbound listener (its /metrics): the traffic went through it."
done
echo

echo "at $RATE req/s: per thread of each proxy (the upstream's own for direct), per request:"
echo "voluntary / involuntary context switches and run time (schedstat); threads under"
echo "0.005 switches and 0.05 us a request left out"
printf '  %-12s %-5s %-18s %9s %9s %9s\n' target proto thread vol/req invol/req "run us"
awk '{ printf "  %-12s %-5s %-18s %9s %9s %9s\n", $1, $2, $3, $4, $5, $6 }' "$WORK/threads.txt"
echo
echo "at $RATE req/s: h2load --rps sends in bursts (a new one after a 2 ms gap); median latency"
echo "(us) by a request's position in its burst, count:median (5+ = the 5th and later)"
awk '{ printf "  %-12s %-5s %5d bursts  1) %-10s 2) %-10s 3) %-10s 4) %-10s 5+) %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$WORK/bursts.txt"
echo

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 <= 0 || a == "nan") print "n/a"; else printf "%.2f", a / b }'; }
echo "ratios (added CPU per request; p50 at $RATE/s against the best peer's)"
for name in "${PS_NAMES[@]}" "${HY_NAMES[@]}"; do
    for proto in h1 h2c; do
        best=$(printf '%s\n' "${P50[nginx:$proto]}" "${P50[haproxy:$proto]}" | sort -g | head -1)
        printf '  %-10s %-4s  / nginx %5s   / haproxy %5s   p50 %s us vs best peer %s us (%+d us)\n' \
            "$name" "$proto" "$(ratio "${ADD[$name:$proto]}" "${ADD[nginx:$proto]}")" \
            "$(ratio "${ADD[$name:$proto]}" "${ADD[haproxy:$proto]}")" "${P50[$name:$proto]}" "$best" \
            "$((${P50[$name:$proto]:-0} - ${best:-0}))"
    done
done
echo
echo "targets (issue 19): added CPU <= 1.2x nginx on h1 and <= 1.0x nginx on h2c; p50 within 30 us of"
echo "the best peer's; idle RSS <= 30 MiB."
echo "  load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (after; the machine is shared: compare within one run)"
