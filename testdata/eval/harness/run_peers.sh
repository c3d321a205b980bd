#!/usr/bin/env bash
# Peer forecasts on the dev traces in ../traces: AutoETS, MSTL, Prophet, seasonal-naive and
# the last value at fixed rolling origins. ~10 min on 2 cores. Writes results/<name>/.
#   pip install statsforecast prophet pandas numpy      # once
#   bash run_peers.sh            # all four dev series
#   ONLY=dev_elb_8c0756 bash run_peers.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TRACES="${TRACES:-$HERE/../../traces}"  # repository layout: testdata/traces
RESULTS="${RESULTS:-$HERE/results}"
ONLY="${ONLY:-}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
run() {  # name file step horizons
  [ -z "$ONLY" ] || [ "$ONLY" = "$1" ] || return 0
  echo "== $1"
  python3 "$HERE/forecast_peers.py" "$TRACES/$2" --step "$3" --horizons "$4" --max-origins 150 \
    --label "$1" --out "$RESULTS/$1"
}
run dev_elb_8c0756   nab_elb_request_count_8c0756.csv 5min 1,3
run dev_twitter_AMZN nab_Twitter_volume_AMZN.csv      5min 1,3
run dev_twitter_GOOG nab_Twitter_volume_GOOG.csv      5min 1,3
run dev_nyc_taxi     nab_nyc_taxi.csv                 30min 1
