#!/usr/bin/env python3
"""Check of the plan's per-cut figures: for 5 zoo models and every cut `augur plan` offers, export the
halves with `augur split`, time each with `augur bench` (1 thread), and compare with the plan's local_ms
(prefix, live) and remote_ms (suffix). The remote is this board itself: an `augur serve` with the same
profile, started on loopback and asked over HTTP (`--remote http://…`), so the suffix is predicted at
the board's live state as a server's daemon would predict its own — a profile file as the remote is
predicted for a quiet board, which a host in a slow spell is not. CUT_REMOTE=profile keeps the file.
The daemon's probes get 3 % of a core (CUT_PROBE_BUDGET; the default 1 % reads the speed about every
half minute), and the check waits for its first four speed readings, the fewest it follows. The
prefix's figure follows `augur plan`'s own reading of the state (CUT_LOCAL=daemon: the same
daemon's, `--state-from`).

The stand-in shares this board with the check's own timings, which a server's daemon never sees:
the prefixes and whole models are the other board's work, and they ran on the core beside its
probes, so it read them as other load and its suffix figures came out 12–25 % above what the
suffix then took alone. So the check stops the stand-in (SIGSTOP) while it times and, before each
plan, lets it run on a board with nothing of the check's running until its sampling window has
passed and it has taken CUT_QUIET_RUNS (3) fresh reference readings — the board as a server's
daemon would read it (CUT_PAUSE=0: the stand-in runs throughout, as before). Its probe budget is
then 10 % (CUT_PROBE_BUDGET), for those readings to come within seconds.

CUT_LOCAL=learned plans as a scheduler beside the board's daemon would: each model is posted to the
stand-in (`POST /v1/models`), planned by its `POST /v1/plan` (the other board the same daemon,
named in its boards/self.url), and each whole-model timing is reported to it (`POST /v1/observe`),
as `augur eval --observe` reports each measurement: the daemon's learner corrects the local figures
of the next plan (a model's first plan follows what the others taught), and the other board's
suffixes the same: the daemon asked for its part gets the model exported from the planning
daemon's stored graph, other bytes and so another id, which its learner knows by the model's
fingerprint. The halves' own timings are never reported.

Interleaved passes, as `augur eval` does: each pass plans each model right before timing its whole
model and its halves, so every prediction is of the state just before its measurement. Per half, the
error is of the mean prediction against the mean measurement; the noise floor, as `augur eval`
defines it, is each pass's measurement of the half predicted by the pass before (passes 2..P), its
mean error. A cut counts when both halves are within ±10 % or within a noise floor, read two ways,
both printed: the half's own floor (P − 1 differences; at 2 passes a single one, which a perfect
predictor on a host moving 18 % beats for only about half its cuts) and the run's floor (the mean
over every half, the figure `augur eval`'s target is set against); scripts/cut_score.py. The whole
model is timed the same way beside its halves, so a bias of the halves can be told from one of the model (its error under `augur bench`) and from
halves that run faster or slower than their part of the whole (the sum of the halves over the
whole)."""
# Usage: scripts/cut_check.py AUGUR PROFILE ZOO_DIR OUT_DIR [PASSES]  (PASSES: 8, the check's protocol since d46)
import atexit, json, signal, subprocess, sys, os, statistics as st, tempfile, time, urllib.request

from cut_score import err, half as summary, passed

A, P, Z, OUT = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
PASSES = int(sys.argv[5]) if len(sys.argv) > 5 else 8
models = ["squeezenet1_1_224", "mobilenet_v2_224", "resnet18_224", "efficientnet_b0_224", "mnasnet1_0_224"]


def run(args):
    return subprocess.run([A] + args, capture_output=True, text=True)


def bench(path):
    r = run(["bench", path, "--threads", "1", "--runs", "10", "--warmup", "3", "--json"])
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)["latency_ms"]["median"]


REMOTE = P
daemon = None
if os.environ.get("CUT_REMOTE") != "profile":
    port = os.environ.get("CUT_PORT", "19747")
    state = tempfile.mkdtemp(prefix="augur-cut-remote-")
    os.makedirs(f"{state}/boards", exist_ok=True)
    with open(f"{state}/boards/self.url", "w") as f:
        f.write(f"http://127.0.0.1:{port}\n")
    PAUSE = os.environ.get("CUT_PAUSE", "1") != "0"
    budget = os.environ.get("CUT_PROBE_BUDGET", "0.1" if PAUSE else "0.03")
    daemon = subprocess.Popen([A, "serve", "--profile", P, "--listen", f"127.0.0.1:{port}",
                               "--state-dir", state, "--probe-budget", budget],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    REMOTE = f"http://127.0.0.1:{port}"

    def _end_stand_in():
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGCONT)
            daemon.terminate()
    atexit.register(_end_stand_in)
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"{REMOTE}/ready", timeout=1).status == 200:
                break
        except Exception:
            pass
        if daemon.poll() is not None:
            sys.exit("the remote daemon exited")
        time.sleep(0.2)
    else:
        daemon.kill()
        sys.exit("the remote daemon did not become ready")
    for _ in range(600):
        snap = json.load(urllib.request.urlopen(f"{REMOTE}/v1/state", timeout=5))["snapshot"]
        if len(snap["probe"].get("reference_history_cpu_ms") or []) >= 4:
            break
        time.sleep(1)
    print(f"remote: {REMOTE} (augur serve, probe budget {budget}, state {state}, "
          f"{'paused while timing' if PAUSE else 'running throughout'})", file=sys.stderr)


LEARNED = daemon is not None and os.environ.get("CUT_LOCAL") == "learned"
ids, pending = {}, []


def post(path, body, content_type="application/json"):
    req = urllib.request.Request(f"{REMOTE}{path}", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def report_pending():
    """The whole-model timings taken while the stand-in was stopped, reported once it runs."""
    while pending:
        m, ms = pending.pop(0)
        try:
            post("/v1/observe", json.dumps({"model": ids[m], "latency_ms": ms, "threads": 1}).encode())
        except Exception as e:
            print(m, "observe failed", e, file=sys.stderr)


def reference_runs():
    return json.load(urllib.request.urlopen(f"{REMOTE}/v1/state", timeout=5))["snapshot"]["probe"]["reference_runs"]


def stand_in(run_it):
    """Resumes the stand-in and waits for its quiet readings (run_it), or stops it before timing."""
    if daemon is None or not PAUSE:
        return
    if not run_it:
        daemon.send_signal(signal.SIGSTOP)
        return
    daemon.send_signal(signal.SIGCONT)
    report_pending()
    t0, n0 = time.monotonic(), reference_runs()
    want = int(os.environ.get("CUT_QUIET_RUNS", "3"))
    # The window (5 s by default) must also have passed, so that its utilisation no longer
    # counts the timings before the pause.
    while time.monotonic() - t0 < 6 or reference_runs() - n0 < want:
        if time.monotonic() - t0 > 120:
            print("the stand-in took no fresh readings in 120 s; planning with what it has", file=sys.stderr)
            break
        time.sleep(0.5)


# This board's live state: `augur plan`'s own reading; CUT_LOCAL=daemon takes the same daemon's.
STATE = ["--state-from", REMOTE] if daemon is not None and os.environ.get("CUT_LOCAL") == "daemon" else []


def plan(m, remote=None):
    if LEARNED and remote is None:
        # Already done when the stand-in was resumed; here for CUT_PAUSE=0, which never pauses it.
        report_pending()
        try:
            if m not in ids:
                with open(f"{Z}/{m}.onnx", "rb") as f:
                    ids[m] = post("/v1/models", f.read(), "application/octet-stream")["id"]
            return post("/v1/plan", json.dumps({"model": ids[m], "remote": "self",
                                                "link_mbps": 1000}).encode())["options"]
        except Exception as e:
            print(m, "plan failed", e, file=sys.stderr)
            return None
    r = run(["plan", f"{Z}/{m}.onnx", "--profile", P, "--remote", remote or REMOTE, "--link-mbps", "1000", "--json"] + STATE)
    if r.returncode != 0:
        print(m, "plan failed", r.stderr.strip(), file=sys.stderr)
        return None
    return json.loads(r.stdout)["options"]


# Cut points and their halves, written once.
cuts, wholes = [], {}
for m in models:
    opts = plan(m)
    if opts is None:
        continue
    wholes[m] = {"predicted": [], "measured": []}
    for o in opts:
        if o["placement"] != "split" or o["threads"] != 1:
            continue
        d = f"{OUT}/{m}/{len(cuts)}"
        os.makedirs(d, exist_ok=True)
        s = run(["split", f"{Z}/{m}.onnx", "--cut", o["cut"], "--out", d, "--profile", P])
        if s.returncode != 0:
            print(m, o["cut"], "split failed", s.stderr.strip(), file=sys.stderr)
            continue
        cuts.append({"model": m, "cut": o["cut"], "dir": d,
                     "predicted": {"prefix": [], "suffix": []},
                     "measured": {"prefix": [], "suffix": []}})
print(f"{len(cuts)} cuts", file=sys.stderr)

for p in range(PASSES):
    for m in wholes:
        stand_in(True)
        opts = plan(m)
        stand_in(False)
        if opts is None:
            continue
        by_cut = {o["cut"]: o for o in opts if o["placement"] == "split" and o["threads"] == 1}
        local = next(o for o in opts if o["placement"] == "local" and o["threads"] == 1)
        wholes[m]["predicted"].append(local["latency_ms"])
        wholes[m]["measured"].append(bench(f"{Z}/{m}.onnx"))
        if LEARNED and wholes[m]["measured"][-1]:
            pending.append((m, wholes[m]["measured"][-1]))
        for c in (c for c in cuts if c["model"] == m):
            o = by_cut.get(c["cut"])
            for half, key in (("prefix", "local_ms"), ("suffix", "remote_ms")):
                c["predicted"][half].append(o[key] if o else None)
                c["measured"][half].append(bench(f"{c['dir']}/{half}.onnx"))
        # A diagnostic beside the verdict (CUT_ALSO_PROFILE=1), asked after the timings so that
        # they follow their own plan as before: the suffix as the profile file predicts it, for a
        # quiet board, each half's working set on its own.
        if daemon is not None and os.environ.get("CUT_ALSO_PROFILE") == "1":
            filed = {o["cut"]: o["remote_ms"] for o in plan(m, P) or []
                     if o["placement"] == "split" and o["threads"] == 1}
            for c in (c for c in cuts if c["model"] == m):
                c.setdefault("suffix_profile", []).append(filed.get(c["cut"]))
        print(f"pass {p + 1}/{PASSES} {m}", file=sys.stderr, flush=True)
json.dump({"cuts": cuts, "wholes": wholes, "remote": REMOTE}, open(f"{OUT}/cuts.json", "w"), indent=1)
if daemon is not None:
    daemon.send_signal(signal.SIGCONT)
    daemon.terminate()
    daemon.wait()


rows = []
for c in cuts:
    for half in ("prefix", "suffix"):
        s = summary(c["predicted"][half], c["measured"][half])
        if s:
            rows.append((c["model"], half, c["cut"]) + s)
if not rows:
    sys.exit("no half was timed")
within = sum(1 for r in rows if abs(r[5]) <= 10)
print(f"halves: {len(rows)}; within ±10 %: {within} ({100 * within / len(rows):.0f} %); "
      f"MAPE {st.mean(abs(r[5]) for r in rows):.2f} %; median signed {st.median(r[5] for r in rows):+.1f} %; "
      f"floor {st.mean(r[6] for r in rows):.2f} %")
for half in ("prefix", "suffix"):
    e = [r[5] for r in rows if r[1] == half]
    print(f"  {half}: MAPE {st.mean(abs(x) for x in e):.2f} %, median signed {st.median(e):+.1f} %")
run_floor = st.mean(r[6] for r in rows)
by_cut = [[(r[5], r[6]) for r in rows if r[2] == c["cut"] and r[0] == c["model"]] for c in cuts]
print(f"cuts with both halves within ±10 % (or the half's own floor): "
      f"{sum(passed(k) for k in by_cut)} of {len(cuts)}")
print(f"cuts with both halves within ±10 % (or the run's floor, {run_floor:.2f} %): "
      f"{sum(passed(k, run_floor) for k in by_cut)} of {len(cuts)}")
print("whole models under the same bench, and the halves' sum over the whole (measured):")
for m, w in wholes.items():
    s = summary(w["predicted"], w["measured"])
    sums = [c["measured"]["prefix"][i] + c["measured"]["suffix"][i]
            for c in cuts if c["model"] == m for i in range(len(c["measured"]["prefix"]))
            if c["measured"]["prefix"][i] and c["measured"]["suffix"][i]]
    whole = st.mean(x for x in w["measured"] if x) if any(w["measured"]) else float("nan")
    e = [abs(r[5]) for r in rows if r[0] == m]
    ratio = st.median(sums) / whole if sums else float("nan")
    print(f"  {m:22s} whole {s[1] if s else float('nan'):8.2f} ms, error {s[2] if s else float('nan'):+6.1f} %; "
          f"halves' sum / whole {ratio:.3f}; halves MAPE {st.mean(e) if e else float('nan'):.2f} %, "
          f"within ±10 % {sum(x <= 10 for x in e)} of {len(e)}")
for r in rows:
    print(f"  {r[0]:22s} {r[1]:6s} plan {r[3]:8.2f} ms  measured {r[4]:8.2f} ms  {r[5]:+6.1f} %  (floor {r[6]:.1f} %)")
