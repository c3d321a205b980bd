#!/usr/bin/env python3
"""How much of a series' error is noise: an oracle that is NOT a forecaster.

Usage: python3 testdata/eval/noise_floor.py SERIES.csv PEER_DIR

At each of the peers' scored (origin, horizon) pairs, predicts the target by the mean
and by the median of its neighbours on BOTH sides (target ± 1..k steps, the target
itself left out; future values included, which no forecaster may use), and prints that
oracle's MASE over the best peer's, with the harness's MASE scale. A ratio near 1 means
the target is mostly noise around its neighbours, so no causal method can reach a
ratio far below it on that series.
"""
import json
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness"))
import evalcommon as ec  # noqa: E402


def main():
    series, peers = sys.argv[1], sys.argv[2]
    summ = json.load(open(os.path.join(peers, "summary.json")))
    step = summ["step_s"]
    times, y, _ = ec.load_series(series, step, int(summ.get("max_fill_steps", 5)))
    od = pd.read_csv(os.path.join(peers, "origins.csv"))
    index = pd.Series(np.arange(len(times)), index=times)
    o = np.array([index[pd.Timestamp(t)] for t in od["origin"]])
    scale = od["scale"].to_numpy()
    for h in summ["horizons_steps"]:
        best = min(v[str(h)]["mase"] for v in summ["metrics"].values()
                   if isinstance(v, dict) and str(h) in v)
        target = o + h
        cells = []
        for k in (2, 4, 6):
            ok = target + k < len(y)
            near = np.stack([y[target[ok] + d] for d in range(-k, k + 1) if d != 0], 1)
            for name, point in (("mean", near.mean(1)), ("median", np.median(near, 1))):
                mase = np.mean(np.abs(y[target[ok]] - point) / scale[ok])
                cells.append(f"{name}±{k} {mase / best:.2f}")
        print(f"{summ.get('label', '')} h={h}: best peer MASE {best:.3f}; "
              f"two-sided oracle / best peer: " + ", ".join(cells))


if __name__ == "__main__":
    main()
