#!/usr/bin/env bash
# Overload benchmark (issue 5, "Performance"), in one run: the scenario of
# tests/overload.rs against
#   prescale           release build, three tiers, adaptive limit (capacity not configured)
#   prescale-noadm     the same with policies.admission.enabled: false
#   haproxy            priority classes by tier, server maxconn = the upstream's slots
#                      (hand-set: HAProxy is told the capacity), timeout queue 250ms
# each with a fresh fixed-capacity upstream (examples/overload.rs: SLOTS slots of
# SERVICE_MS each, FIFO queue behind them). Per target: critical alone at 40 % of
# capacity (the unloaded p99), then open-loop Poisson arrivals at MULT × capacity,
# 20 % critical / 30 % standard / 50 % batch by path prefix, WARMUP s unmeasured then
# DURATION s measured. Prints goodput, per-tier success and p50/p99, and rejection
# latency (send to answer) per target.
#
# Usage (from the repo root):   bash benches/overload.sh
# Knobs (environment):          SLOTS=24 SERVICE_MS=60 MULT=3 WARMUP=10 DURATION=30
#                               UNLOADED=10 TIMEOUT_MS=2000 SKIP_BUILD=0 KEEP=0
#                               TARGETS="prescale prescale-noadm haproxy"
#
# Loopback only; every process it starts is killed on exit (trap).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

SLOTS=${SLOTS:-24}
SERVICE_MS=${SERVICE_MS:-60}
MULT=${MULT:-3}
WARMUP=${WARMUP:-10}
DURATION=${DURATION:-30}
UNLOADED=${UNLOADED:-10}
TIMEOUT_MS=${TIMEOUT_MS:-2000}
SKIP_BUILD=${SKIP_BUILD:-0}
TARGETS=${TARGETS:-prescale prescale-noadm haproxy}

if ((DURATION < 5 || DURATION > 120)); then echo "DURATION must be 5..120" >&2; exit 2; fi
if ((WARMUP < 1 || WARMUP > 60)); then echo "WARMUP must be 1..60" >&2; exit 2; fi
if ((SLOTS < 1 || SLOTS > 1000 || SERVICE_MS < 1 || SERVICE_MS > 10000)); then
    echo "SLOTS 1..1000, SERVICE_MS 1..10000" >&2; exit 2
fi
for tool in haproxy curl ss cargo awk; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (scripts/install-deps)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/prescale-overload.XXXXXX)
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

# --- build ---------------------------------------------------------------------------

BUILD_CMD=(cargo build --release --bin prescale --example overload)
if [[ $SKIP_BUILD != 1 ]]; then
    log "+ ${BUILD_CMD[*]}"
    "${BUILD_CMD[@]}" >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PRESCALE=$TARGET_DIR/release/prescale
DRIVER=$TARGET_DIR/release/examples/overload
[[ -x $PRESCALE && -x $DRIVER ]] || { echo "missing $PRESCALE or $DRIVER" >&2; exit 1; }

# --- targets -------------------------------------------------------------------------

start() { # logfile cmd... ; sets LAST_PID
    local logf=$1
    shift
    "$@" >"$logf" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
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

prescale_config() { # file port admin upstream_port enabled
    cat >"$1" <<EOF
admin:
  address: 127.0.0.1:$3
drain:
  grace_period: 1s
listeners:
  - name: inbound
    direction: inbound
    address: 127.0.0.1:$2
    cluster: local
clusters:
  - name: local
    endpoints: ["127.0.0.1:$4"]
    pool_size: 512
policies:
  tiers:
    default: batch
    list:
      - { name: critical, priority: 0, share: 1.0, sheddable: false, queue: true, match: { path_prefix: ["/critical"] } }
      - { name: standard, priority: 1, match: { path_prefix: ["/standard"] } }
      - { name: batch, priority: 2 }
  admission:
    enabled: $5
    # As tests/overload.rs: capacity not given, the upstream said to be steady.
    limit: { floor: 1, ceiling: 1000, tolerance: 1.03, drift_guard: 1.05, queue_size: 2 }
    priority_headroom: 0.3
    # A slot frees every 2.5 ms (24 x 60 ms): the default 5 ms target is above that.
    queue: { target: 5ms, interval: 100ms }
EOF
}

haproxy_config() { # file port upstream_port
    cat >"$1" <<EOF
global
    maxconn 8000
    pidfile $WORK/haproxy.pid

defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    # A request waits at most this long for a server slot, then gets a 503.
    timeout queue 250ms

frontend fe
    bind 127.0.0.1:$2
    # Lower classes are dequeued first.
    http-request set-priority-class int(-10) if { path_beg /critical }
    http-request set-priority-class int(0) if { path_beg /standard }
    http-request set-priority-class int(10) if !{ path_beg /critical } !{ path_beg /standard }
    default_backend be

backend be
    http-reuse always
    # The upstream's capacity, set by hand.
    server upstream 127.0.0.1:$3 maxconn $SLOTS
EOF
}

declare -A RES

run_target() { # name
    local name=$1 up_port port admin proxy_pid up_pid url
    up_port=$(free_port)
    port=$(free_port)
    log "== $name"
    start "$WORK/$name-upstream.log" "$DRIVER" upstream --listen "127.0.0.1:$up_port" \
        --slots "$SLOTS" --service-ms "$SERVICE_MS"
    up_pid=$LAST_PID
    wait_http "http://127.0.0.1:$up_port/__stats" upstream "$up_pid" || { cat "$WORK/$name-upstream.log" >&2; exit 1; }
    case $name in
    prescale | prescale-noadm)
        admin=$(free_port)
        local enabled=true
        [[ $name == prescale-noadm ]] && enabled=false
        prescale_config "$WORK/$name.yaml" "$port" "$admin" "$up_port" "$enabled"
        start "$WORK/$name.log" env RUST_LOG=warn "$PRESCALE" run --config "$WORK/$name.yaml"
        proxy_pid=$LAST_PID
        wait_http "http://127.0.0.1:$admin/ready" "$name" "$proxy_pid" || { cat "$WORK/$name.log" >&2; exit 1; }
        ;;
    haproxy)
        haproxy_config "$WORK/haproxy.cfg" "$port" "$up_port"
        start "$WORK/haproxy.log" haproxy -db -f "$WORK/haproxy.cfg"
        proxy_pid=$LAST_PID
        wait_http "http://127.0.0.1:$port/critical/ready" haproxy "$proxy_pid" || { cat "$WORK/haproxy.log" >&2; exit 1; }
        ;;
    esac
    url="http://127.0.0.1:$port"
    "$DRIVER" load --url "$url" --upstream "127.0.0.1:$up_port" --slots "$SLOTS" \
        --service-ms "$SERVICE_MS" --multiplier "$MULT" --unloaded "$UNLOADED" \
        --warmup "$WARMUP" --duration "$DURATION" --timeout-ms "$TIMEOUT_MS" \
        --label "$name" | tee "$WORK/$name.out" >&2
    if [[ $name == prescale ]]; then
        LIMIT=$(curl -s --max-time 5 "http://127.0.0.1:$admin/v1/tiers" |
            tr ',' '\n' | awk -F: '/"limit"/ { print $2; exit }')
    fi
    RES[$name]=$(grep '^RESULT' "$WORK/$name.out")
    stop "$proxy_pid"
    stop "$up_pid"
}

echo "prescale overload benchmark"
echo "  date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if git rev-parse --short HEAD >/dev/null 2>&1; then
    echo "  commit:    $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (+ uncommitted changes)')"
fi
echo "  host:      $(uname -sr), $(nproc) cpus, load avg $(cut -d' ' -f1-3 /proc/loadavg) (before)"
echo "  prescale:  $("$PRESCALE" --version) (release); haproxy: $(haproxy -v | head -1 | awk '{ print $3 }')"
echo "  upstream:  $SLOTS slots × $SERVICE_MS ms (nominal $((SLOTS * 1000 / SERVICE_MS)) req/s), FIFO queue behind them"
echo "  load:      open loop, Poisson, ${MULT}× nominal capacity, 20/30/50 % critical/standard/batch,"
echo "             ${WARMUP}s warm-up + ${DURATION}s measured, per-request timeout ${TIMEOUT_MS} ms;"
echo "             unloaded p99 from ${UNLOADED}s of critical alone at 40 % of capacity"
echo

for t in $TARGETS; do
    case $t in prescale | prescale-noadm | haproxy) ;; *) echo "unknown target $t" >&2; exit 2 ;; esac
    run_target "$t"
done

field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }
pctf() { awk -v x="$1" 'BEGIN { printf "%.1f", x * 100 }'; }

echo
printf '%-15s | %9s %7s | %-22s | %-22s | %-22s | %9s %9s %7s | %6s\n' \
    target goodput "% cap" "critical ok p50/p99" "standard ok p50/p99" "batch ok p50/p99" \
    "rej p50" "rej p99" "retry%" "crit×"
printf -- '-%.0s' $(seq 1 150)
echo
for t in $TARGETS; do
    r=${RES[$t]}
    tier() {
        printf '%5s%% %6s/%-7s' "$(pctf "$(field "$1_ok" <<<"$r")")" \
            "$(field "$1_p50" <<<"$r")" "$(field "$1_p99" <<<"$r")"
    }
    rej=$(field rejected <<<"$r")
    retry=$(awk -v a="$(field retry_after <<<"$r")" -v b="$rej" 'BEGIN { if (b == 0) print "-"; else printf "%.0f", 100 * a / b }')
    printf '%-15s | %9s %7s | %s | %s | %s | %9s %9s %7s | %6s\n' "$t" \
        "$(field goodput <<<"$r")" "$(pctf "$(field goodput_share <<<"$r")")" \
        "$(tier critical)" "$(tier standard)" "$(tier batch)" \
        "$(field rej_p50 <<<"$r")" "$(field rej_p99 <<<"$r")" "$retry" "$(field crit_ratio <<<"$r")"
done
echo
r=${RES[prescale]:-${RES[$t]}}
echo "  latencies in ms (p50/p99 of successful requests, from the scheduled start; rejections from send);"
echo "  goodput in req/s of 2xx answers within the timeout, '% cap' against the upstream's measured capacity"
echo "  ($(field capacity <<<"$r") req/s in the prescale run); 'crit×' = critical p99 / its unloaded p99 ($(field unloaded_p99 <<<"$r") ms for prescale);"
echo "  strict-priority ideal success: critical $(pctf "$(field critical_ideal <<<"$r")")%, standard $(pctf "$(field standard_ideal <<<"$r")")%, batch $(pctf "$(field batch_ideal <<<"$r")")%;"
echo "  prescale's learned limit at the end: ${LIMIT:-?} (the upstream has $SLOTS slots)."
echo "  load avg after: $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: compare within one run)"
