#!/usr/bin/env python3
"""What the cut check can tell on a moving host: the share of cuts a predictor would pass if it were
exactly right on average, its per-pass figures as noisy as the timings, as `scripts/cut_check.py`
scores them (each half's mean prediction against its mean measurement over P passes; within ±10 %
or the noise floor, read as the half's own floor and as the run's).

The host is modelled as independent log-normal speed per timing (sigma NOISE) and the prediction as
the same noise drawn independently (a reading taken before a timing barely foretells it on a host
that moves within seconds; docs/evaluation.md, "The host within a minute"), optionally with a bias.
A count from the check is read against this: below it, the predictor is wrong; at it, the host, not
the predictor, sets the count.

Usage: scripts/cut_power.py [NOISE (0.16)] [PASSES ...]"""
import math, random, statistics as st, sys

from cut_score import half, passed

NOISE = float(sys.argv[1]) if len(sys.argv) > 1 else 0.16
PASSES = [int(a) for a in sys.argv[2:]] or [2, 3, 4, 6, 8]
CUTS = 4000


def simulate(passes, pred_noise, bias, rng):
    halves = []
    for _ in range(CUTS):
        cut = []
        for _ in range(2):
            m = [math.exp(rng.gauss(0, NOISE)) for _ in range(passes)]
            p = [math.exp(bias + rng.gauss(0, pred_noise)) for _ in range(passes)]
            cut.append(half(p, m)[2:])
        halves.append(cut)
    run_floor = st.mean(f for cut in halves for _, f in cut)
    own = sum(passed(cut) for cut in halves) / CUTS
    run = sum(passed(cut, run_floor) for cut in halves) / CUTS
    return run_floor, own, run


rng = random.Random(15)
print(f"host noise {NOISE:.2f} (log sd per timing); share of cuts passed, own floor / run floor")
print(f"{'passes':>6}  {'floor':>6}  {'exact on average':>17}  {'bias +5 %':>12}  {'prediction half as noisy':>24}")
for n in PASSES:
    a = simulate(n, NOISE, 0.0, rng)
    b = simulate(n, NOISE, math.log(1.05), rng)
    c = simulate(n, NOISE / 2, 0.0, rng)
    print(f"{n:>6}  {a[0]:5.1f}%  {a[1]:7.2f} / {a[2]:.2f}  {b[1]:5.2f} / {b[2]:.2f}  {c[1]:13.2f} / {c[2]:.2f}")
