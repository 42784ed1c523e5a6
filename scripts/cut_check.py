#!/usr/bin/env python3
"""Check of the plan's per-cut figures: for 5 zoo models and every cut `augur plan` offers, export the halves with
`augur split`, time each with `augur bench` (1 thread), and compare with the plan's local_ms (prefix,
live) and remote_ms (suffix, from the same profile as remote, quiet). Two interleaved passes; the
noise floor is pass 2's measurement predicted by pass 1's."""
# Usage: scripts/cut_check.py AUGUR PROFILE ZOO_DIR OUT_DIR
import json, subprocess, sys, os, statistics as st
A, P, Z, OUT = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
models = ["squeezenet1_1_224", "mobilenet_v2_224", "resnet18_224", "efficientnet_b0_224", "mnasnet1_0_224"]
def run(args):
    return subprocess.run([A] + args, capture_output=True, text=True)
def bench(path):
    r = run(["bench", path, "--threads", "1", "--runs", "10", "--warmup", "3", "--json"])
    if r.returncode != 0:
        return None
    d = json.loads(r.stdout)
    return d["latency_ms"]["median"]
cuts = []
for m in models:
    path = f"{Z}/{m}.onnx"
    r = run(["plan", path, "--profile", P, "--remote", P, "--link-mbps", "1000", "--json"])
    if r.returncode != 0:
        print(m, "plan failed", r.stderr.strip(), file=sys.stderr); continue
    opts = [o for o in json.loads(r.stdout)["options"] if o["placement"] == "split" and o["threads"] == 1]
    for o in opts:
        d = f"{OUT}/{m}/{len(cuts)}"
        os.makedirs(d, exist_ok=True)
        s = run(["split", path, "--cut", o["cut"], "--out", d, "--profile", P])
        if s.returncode != 0:
            print(m, o["cut"], "split failed", s.stderr.strip(), file=sys.stderr); continue
        cuts.append({"model": m, "cut": o["cut"], "dir": d, "plan_prefix_ms": o["local_ms"],
                     "plan_suffix_ms": o["remote_ms"], "measured": {"prefix": [], "suffix": []},
                     "predicted_live_prefix": []})
print(f"{len(cuts)} cuts", file=sys.stderr)
for p in range(2):
    for i, c in enumerate(cuts):
        for half in ("prefix", "suffix"):
            c["measured"][half].append(bench(f"{c['dir']}/{half}.onnx"))
        print(f"pass {p} cut {i+1}/{len(cuts)}", file=sys.stderr, flush=True)
json.dump(cuts, open(f"{OUT}/cuts.json", "w"), indent=1)
def err(pred, meas):
    return (pred - meas) / meas * 100
rows, floor = [], []
for c in cuts:
    for half, key in (("prefix", "plan_prefix_ms"), ("suffix", "plan_suffix_ms")):
        ms = [x for x in c["measured"][half] if x]
        if len(ms) < 2: continue
        mean = st.mean(ms)
        rows.append((c["model"], half, c[key], mean, err(c[key], mean)))
        floor.append(abs(err(ms[0], ms[1])))
within = sum(1 for r in rows if abs(r[4]) <= 10)
print(f"halves: {len(rows)}; within ±10 %: {within} ({100*within/max(1,len(rows)):.0f} %); MAPE {st.mean(abs(r[4]) for r in rows):.2f} %; floor (pass 2 by pass 1) {st.mean(floor):.2f} %")
both = {}
for r in rows:
    both.setdefault((r[0], r[2]), []).append(abs(r[4]) <= 10)
ok = 0
for c in cuts:
    k = [abs(err(c[key], st.mean([x for x in c["measured"][h] if x]))) <= 10
         for h, key in (("prefix", "plan_prefix_ms"), ("suffix", "plan_suffix_ms")) if len([x for x in c["measured"][h] if x]) >= 2]
    ok += len(k) == 2 and all(k)
print(f"cuts with both halves within ±10 %: {ok} of {len(cuts)}")
for m in models:
    e = [abs(r[4]) for r in rows if r[0] == m]
    if e: print(f"  {m}: {len(e)} halves, MAPE {st.mean(e):.2f} %, within ±10 % {sum(x<=10 for x in e)}")
for r in rows:
    print(f"  {r[0]:22s} {r[1]:6s} plan {r[2]:8.2f} ms  measured {r[3]:8.2f} ms  {r[4]:+6.1f} %")
