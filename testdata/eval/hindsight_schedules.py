#!/usr/bin/env python3
"""Reference replica schedules for `autoscale_sim.py --replay`: what a schedule that
knows more than a causal forecaster can reach on a count series.

Usage:
  python3 hindsight_schedules.py SERIES.csv --capacity-per-replica R --out SCHED.csv
          (--hour-quantile Q | --window-quantile Q --rows W [--trailing] | --constant N)
          [--ahead 120] [--floor] [--every 15]

Reads a `timestamp,value` series of counts per row (regular rows; the simulator's
reading: the rate value / row-seconds is held for the whole row) and writes
`timestamp,replicas`, one row every `--every` seconds (15: the decision period) from
the first timestamp, in the series' own clock and format (`YYYY-MM-DD HH:MM:SS`), so
the simulator maps it onto its grid without conversion:

  --hour-quantile Q   hindsight: at t, ceil(quantile_Q(rate of every row of the trace
                      whose hour of day is the hour of t + ahead) / R), i.e. each hour
                      of the day's demand distribution over the whole trace, asked for
                      `--ahead` seconds (the start delay) before that hour.
  --window-quantile Q --rows W
                      semi-clairvoyant: at t, ceil(quantile_Q(rate of the W rows before
                      and the W rows after the row under way at t + ahead, that row
                      itself excluded) / R): the local level and spread, future
                      included, but not the row's own demand. With --trailing, causal
                      instead: the W rows completed before t.
  --constant N        a fixed fleet of N replicas.
  --floor             also never below ceil(rate of the row under way / R) once that
                      row has been under way for 10 s, before that the previous
                      row's (the current-demand floor prescale applies: a reading of
                      the last 10 s, exact here because the simulator holds a row's
                      rate for all its seconds, held until the next reading).

Deterministic, no network. Used for the GOOG 120 s frontier in docs/scaling.md.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("series")
    ap.add_argument("--capacity-per-replica", type=float, required=True)
    ap.add_argument("--out", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--hour-quantile", type=float)
    g.add_argument("--window-quantile", type=float)
    g.add_argument("--constant", type=int)
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--trailing", action="store_true")
    ap.add_argument("--ahead", type=int, default=120, help="seconds asked ahead (start delay)")
    ap.add_argument("--floor", action="store_true")
    ap.add_argument("--every", type=int, default=15)
    a = ap.parse_args(argv)

    df = pd.read_csv(a.series)
    t = pd.to_datetime(df.iloc[:, 0])
    v = pd.to_numeric(df.iloc[:, 1], errors="coerce").to_numpy(dtype=float)
    step = int(pd.Series(t).diff().dt.total_seconds().mode().iloc[0])
    rate = v / step
    R = a.capacity_per_replica
    t0 = t.iloc[0]
    span = int((t.iloc[-1] - t0).total_seconds()) + step
    sec = np.arange(0, span, a.every)
    when = t0 + pd.to_timedelta(sec, unit="s")
    off = ((t - t0).dt.total_seconds().to_numpy()).astype(np.int64)
    if a.constant is not None:
        rep = np.full(len(sec), a.constant, dtype=np.int64)
    elif a.window_quantile is not None:
        w = a.rows
        pad = np.concatenate([np.full(w, np.nan), rate, np.full(w, np.nan)])
        win = np.lib.stride_tricks.sliding_window_view(pad, 2 * w + 1).copy()
        if a.trailing:
            win[:, w:] = np.nan          # row i: rows i-w .. i-1
        else:
            win[:, w] = np.nan           # rows i-w .. i+w without i
        with np.errstate(all="ignore"):
            level = np.nan_to_num(np.nanquantile(win, a.window_quantile, axis=1))
        if a.trailing:
            at = np.searchsorted(off, sec, side="right") - 1
        else:
            at = np.searchsorted(off, sec + a.ahead, side="right") - 1
        rep = np.ceil(level[np.clip(at, 0, len(rate) - 1)] / R - 1e-9).astype(np.int64)
    else:
        hours = t.dt.hour.to_numpy()
        qh = np.array([np.nanquantile(rate[hours == h], a.hour_quantile) if np.any(hours == h) else 0.0
                       for h in range(24)])
        ahead = (when + pd.Timedelta(seconds=a.ahead)).hour
        rep = np.ceil(qh[np.asarray(ahead)] / R - 1e-9).astype(np.int64)
    if a.floor:
        row = np.searchsorted(off, sec, side="right") - 1
        under_way = sec - off[np.clip(row, 0, None)]
        # the reading in force: the row under way once 10 s of it are measured, the
        # row before until then (a reading is held until the next one replaces it)
        row = np.where(under_way >= 10, row, row - 1)
        r_now = np.where(row >= 0, rate[np.clip(row, 0, None)], 0.0)
        r_now = np.nan_to_num(r_now)
        rep = np.maximum(rep, np.ceil(r_now / R - 1e-9).astype(np.int64))
    rep = np.maximum(rep, 1)
    out = pd.DataFrame({"timestamp": when.strftime("%Y-%m-%d %H:%M:%S"), "replicas": rep})
    out.to_csv(a.out, index=False)
    print(f"{a.out}: {len(out)} rows, mean {rep.mean():.3f} replicas, "
          f"{rep.mean() * span / 3600.0:.1f} replica-hours requested (before start delays)")


if __name__ == "__main__":
    main()
