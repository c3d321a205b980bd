#!/usr/bin/env python3
"""A global model across series, measured against `prescale forecast` (an experiment;
docs/forecasting.md "Tried and not kept").

Usage (pip install lightgbm pandas numpy; ~3 min on 2 cores):
  for each NAME FILE STEP HORIZON of docs/forecasting.md:
    prescale forecast --input testdata/traces/FILE --step STEP --horizon HORIZON \
        --level 0.9 --out /tmp/fc/NAME          # every origin, no --origins
  python3 testdata/eval/global_model.py /tmp/fc

Per dev series and horizon, one LightGBM model (absolute-error objective, in
ln(1 + y) relative to the last hour's mean; lags, day and week profiles) is trained
on the OTHER dev series and this series' own past before its first scored origin, as
a model pooled across series (the M4/M5 winners' kind) would meet a series it was
not trained on. Prints the MASE over every origin from the peers' first on (each
origin's harness scale), and over the peers' 150 origins, for the global model,
prescale, and their mean.
"""
import json
import os
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "harness"))
import evalcommon as ec  # noqa: E402

TRACES = os.path.join(HERE, "..", "traces")
SERIES = {
    "dev_elb_8c0756": ("nab_elb_request_count_8c0756.csv", 300, [1, 3]),
    "dev_twitter_AMZN": ("nab_Twitter_volume_AMZN.csv", 300, [1, 3]),
    "dev_twitter_GOOG": ("nab_Twitter_volume_GOOG.csv", 300, [1, 3]),
    "dev_nyc_taxi": ("nab_nyc_taxi.csv", 1800, [1]),
}


def load(name):
    file, step, _ = SERIES[name]
    times, y, _ = ec.load_series(os.path.join(TRACES, file), step, 5)
    return times, y


def features(y, h, step_s):
    """Scale-free features at each index t (the last value known), the target
    ln(1 + y[t + h]) minus the level, and the level (the last hour's mean of ln(1 + y))."""
    day = 86400 // step_s
    z = pd.Series(np.log1p(np.maximum(y, 0)))
    level = z.rolling(12, min_periods=6).mean().to_numpy()
    lag = lambda k: z.shift(k).to_numpy()  # noqa: E731
    f = {f"lag{k}": lag(k) - level for k in range(12)}
    f["mean_quarter_day"] = z.rolling(max(day // 4, 2), min_periods=2).mean().to_numpy() - level
    f["mean_day"] = z.rolling(day, min_periods=day // 2).mean().to_numpy() - level
    f["volatility_day"] = z.diff().rolling(day, min_periods=day // 2).std().to_numpy()
    f["same_slot_yesterday"] = lag(day - h) - level
    f["same_slot_yesterday_3"] = (lag(day - h - 1) + lag(day - h) + lag(day - h + 1)) / 3 - level
    f["same_slot_last_week"] = lag(7 * day - h) - level
    with np.errstate(all="ignore"):
        week = np.stack([lag(d * day - h) for d in range(1, 8)])
        counted = np.isfinite(week).sum(axis=0)
        f["profile_week"] = np.where(counted > 0, np.nansum(week, axis=0) / np.maximum(counted, 1), np.nan) - level
    f["now_yesterday"] = lag(day) - level
    f["steps_per_day"] = np.full(len(y), float(day))
    f["horizon_days"] = np.full(len(y), h / day)
    return pd.DataFrame(f), z.shift(-h).to_numpy() - level, level


def main():
    fc_root = sys.argv[1]
    for name, (_, step, horizons) in SERIES.items():
        times, y = load(name)
        peers = os.path.join(HERE, "peers", name)
        summ = json.load(open(os.path.join(peers, "summary.json")))
        cap, day = summ["history_cap_steps"], summ["season_day_steps"]
        index = pd.Series(np.arange(len(times)), index=times)
        first = int(index[pd.Timestamp(summ["origins_first"])])
        scored = set(int(index[pd.Timestamp(o)]) for o in pd.read_csv(os.path.join(peers, "origins.csv")).origin)
        mine = pd.read_csv(os.path.join(fc_root, name, "forecasts.csv"))
        mine["origin"] = pd.to_datetime(mine.origin.str.rstrip("Z"))
        for h in horizons:
            xs, ts = [], []
            for other, (_, other_step, _) in SERIES.items():
                if other == name:
                    continue
                _, yo = load(other)
                x, t, _ = features(yo, max(1, round(h * step / other_step)), other_step)
                ok = np.isfinite(t) & np.isfinite(x["lag0"])
                xs.append(x[ok])
                ts.append(t[ok])
            x, t, level = features(y, h, step)
            ok = (np.arange(len(y)) <= first - h) & np.isfinite(t) & np.isfinite(x["lag0"])
            xs.append(x[ok])
            ts.append(t[ok])
            model = lgb.LGBMRegressor(objective="l1", n_estimators=400, learning_rate=0.03,
                                      num_leaves=31, min_child_samples=50, subsample=0.8,
                                      subsample_freq=1, colsample_bytree=0.8, verbose=-1)
            model.fit(pd.concat(xs), np.concatenate(ts))
            at = np.arange(first, len(y) - h)
            at = at[np.isfinite(y[at + h]) & np.isfinite(level[at])]
            pooled = np.maximum(np.expm1(level[at] + model.predict(x.iloc[at])), 0)
            by_origin = dict(zip(mine[mine.horizon_steps == h].origin, mine[mine.horizon_steps == h].point))
            ours = np.maximum(np.array([by_origin.get(times[o], np.nan) for o in at]), 0)
            scale = np.array([ec.mase_scale(y[ec.train_window(y, o, cap):o + 1], day) for o in at])
            ok = np.isfinite(ours) & np.isfinite(scale) & (scale > 0)
            sel = ok & np.array([o in scored for o in at])
            actual = y[at + h]
            err = {k: np.abs(actual - p) / scale for k, p in
                   (("global", pooled), ("prescale", ours), ("mean", (pooled + ours) / 2))}
            every = " ".join(f"{k} {e[ok].mean():.4f}" for k, e in err.items())
            origins = " ".join(f"{k} {e[sel].mean():.3f}" for k, e in err.items())
            print(f"{name} h={h}: every origin ({ok.sum()}): {every} | the 150 origins: {origins}")


if __name__ == "__main__":
    main()
