#!/usr/bin/env python3
"""A per-request CSV log composed of real count series, one route per series, for
replaying the engine's reconciliation on kinds of traffic with distinct daily shapes.

Usage:
  python3 composite_log.py --out LOG.csv [--rate 0.5] [--seed 1]
          ROUTE=SERIES.csv[@SHIFT_DAYS] ...

Each argument maps the rows of a real `timestamp,value` count series (NAB) to one
route: the series' timestamps are moved by SHIFT_DAYS whole days (so series recorded
at different times share one span; use a multiple of 7 to keep weekdays), cut to the
span of the first series, and its counts scaled so the route's mean is `--rate`
requests/s. Each row's scaled count (stochastically rounded) becomes that many
requests at uniformly random instants inside the row. Output, sorted by time:
`time,method,path,status,bytes` (epoch seconds with milliseconds; GET; 200; a
response size drawn around a per-route mean so the routes also differ in size).
Replay it with
  prescale replay --input LOG.csv --format request-csv \
      --columns time=time,method=method,path=path,status=status,response_size=bytes

The result is a composite of real series, not a real request log: its arrivals within
a row are synthetic (uniform), only the per-row volume of each route is real.
Deterministic for a given seed; no network.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=float, default=0.5, help="mean requests/s per route")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("routes", nargs="+", help="ROUTE=SERIES.csv[@SHIFT_DAYS]")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    span = None
    parts = []
    for k, spec in enumerate(a.routes):
        route, rest = spec.split("=", 1)
        path, _, shift = rest.partition("@")
        df = pd.read_csv(path)
        t = pd.to_datetime(df.iloc[:, 0]) + pd.Timedelta(days=int(shift or 0))
        v = pd.to_numeric(df.iloc[:, 1], errors="coerce").fillna(0).to_numpy(dtype=float)
        step = pd.Series(t).diff().dt.total_seconds().mode().iloc[0]
        start = t.astype("int64").to_numpy() // 10**9
        if span is None:
            span = (start[0], start[-1] + step)
        keep = (start >= span[0]) & (start + step <= span[1])
        start, v = start[keep], v[keep]
        scale = a.rate * step / v.mean()
        want = v * scale
        n = np.floor(want).astype(np.int64)
        n += rng.random(len(n)) < (want - n)
        ts = np.repeat(start.astype(float), n) + rng.random(n.sum()) * step
        mean_bytes = 2000 * (k + 1) ** 2
        size = np.maximum(1, rng.normal(mean_bytes, mean_bytes * 0.1, len(ts))).astype(np.int64)
        parts.append(pd.DataFrame({"time": ts, "path": route, "bytes": size}))
        print(f"{route}: {path} rows {keep.sum()}, x{scale:.4g}, {n.sum()} requests, "
              f"{n.sum() / (span[1] - span[0]):.3f} req/s")
    out = pd.concat(parts).sort_values("time", kind="stable")
    out.insert(1, "method", "GET")
    out.insert(3, "status", 200)
    out = out[["time", "method", "path", "status", "bytes"]]
    out.to_csv(a.out, index=False, float_format="%.3f")
    print(f"{a.out}: {len(out)} requests")


if __name__ == "__main__":
    main()
