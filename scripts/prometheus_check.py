#!/usr/bin/env python3
"""augur under a real Prometheus (called by scripts/prometheus-check.sh, which installs Debian's
`prometheus` package first).

Starts `augur serve` on a loopback port with a temporary state directory, posts models,
predictions and observations for a while, runs `promtool check metrics` on its /metrics (no
problem allowed), starts a Prometheus server (loopback, temporary storage, 1 s scrapes, the alert
rules loaded) scraping it, then asks Prometheus's HTTP API for `up{job="augur"}`, an augur series,
the rules, and every `expr` of dashboards/*.json. A second `augur serve` reads sysfs from a
recorded Jetson tree (tests/fixtures/jetson/sys: thermal zones, cpufreq limits, INA3221 power
rails) and replays a counter trace for its hardware counters (tests/fixtures/jetson/counters.txt,
synthetic: rates chosen by hand, see its header) in place of perf events, so the panels of
sensors a VM lacks are queried against real series of the daemon's own making — fixture
readings, labelled as such by their `instance`. A dashboard query must return data; one that
reads a sensor neither daemon has (its `augur_sensor_up` is 0 on both) is reported as skipped,
with the reason. Exits non-zero on any failure. Standard library only; every wait is bounded and
both servers are stopped on the way out.
"""

import argparse
import glob
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HOST = "127.0.0.1"
MODELS = [
    "tests/fixtures/nnmeter/conv_bn_relu.json",
    "tests/fixtures/nnmeter/classifier.json",
    "tests/fixtures/nnmeter/mobilenet_block.json",
]
# How long traffic runs before the dashboard is queried; rates are taken over RATE_WINDOW.
TRAFFIC_SECONDS = 25
RATE_WINDOW = "30s"
# Metric-name prefixes of the series that come from one sensor (named as in augur_sensor_up).
SENSOR_OF = [
    ("augur_power_", "power"),
    ("augur_thermal_", "thermal"),
    ("augur_memory_bandwidth_", "memory_pmu"),
    ("augur_perf_", "perf"),
    ("augur_probe_compute_", "probe_compute"),
    ("augur_probe_memory_", "probe_memory"),
    ("augur_cpu_frequency_", "cpufreq"),
    ("augur_pressure_", "pressure"),
    ("augur_load", "loadavg"),
    ("augur_procs_", "cpu_time"),
    ("augur_cpu_utilization_", "cpu_time"),
    ("augur_own_cpu_", "cpu_time"),
]
# Series of a sensor that is up but may not know every figure: the snapshot's per-CPU field that
# is null on every CPU when the board does not say (a VM's cpufreq has no limits, only `cpu MHz`).
CPU_FIELD_OF = {
    "augur_cpu_frequency_max_hertz": "max_hertz",
    "augur_cpu_frequency_min_hertz": "min_hertz",
    "augur_cpu_frequency_hertz": "frequency_hertz",
}


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(method, url, body=None, ctype=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(what, check, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.25)
    raise SystemExit(f"FAIL: {what} within {seconds} s ({last or 'never true'})")


class Daemon:
    """`augur serve` on a free loopback port."""

    def __init__(self, exe, tmp, name="augur", extra=()):
        self.log = open(os.path.join(tmp, f"{name}.log"), "w+")
        self.proc = subprocess.Popen(
            [
                exe,
                "serve",
                "--listen",
                f"{HOST}:0",
                "--state-dir",
                os.path.join(tmp, f"{name}-state"),
                "--profile",
                os.path.join(tmp, "no-profile.json"),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "AUGUR_LOG": "warn"},
        )
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://([0-9.]+:[0-9]+)", line)
        if not m:
            self.stop()
            raise SystemExit(f"FAIL: augur serve did not say where it listens: {line!r}\n{self.tail()}")
        self.addr = m.group(1)
        self.url = f"http://{self.addr}"

    def tail(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Prometheus:
    def __init__(self, tmp, targets, rules):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                f"rule_files:\n  - {rules}\n"
                "scrape_configs:\n  - job_name: augur\n    static_configs:\n"
                f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
            )
        self.log = open(os.path.join(tmp, "prometheus.log"), "w+")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={cfg}",
                f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                f"--web.listen-address={HOST}:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def query(self, q):
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        status, body = http("GET", url)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            return None, doc.get("error", f"HTTP {status}")
        return doc["data"]["result"], None

    def tail(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def traffic(augur, seconds, stop):
    """Imports the models one by one (so import rates change between scrapes), then predicts and
    observes on all of them until `seconds` are up."""
    ids = []
    errors = []
    t0 = time.monotonic()
    rng = random.Random(7)
    next_import = 0.0
    while time.monotonic() - t0 < seconds and not stop.is_set():
        now = time.monotonic() - t0
        if len(ids) < len(MODELS) and now >= next_import:
            with open(MODELS[len(ids)], "rb") as f:
                status, body = http("POST", f"{augur}/v1/models", f.read(), "application/json", 60)
            if status not in (200, 201):
                errors.append(f"POST /v1/models {MODELS[len(ids)]}: {status} {body[:200]!r}")
                break
            ids.append(json.loads(body)["id"])
            http("GET", f"{augur}/v1/models/{ids[-1]}")
            next_import = now + 4.0
        for mid in ids:
            status, body = http(
                "POST", f"{augur}/v1/predict", json.dumps({"model": mid}).encode(), "application/json"
            )
            if status != 200:
                errors.append(f"POST /v1/predict: {status} {body[:200]!r}")
                continue
            predicted = json.loads(body)["latency_ms"]
            # Observed latencies around the prediction, a few far off, so every error bucket fills.
            observed = predicted * rng.choice([0.8, 0.95, 1.0, 1.05, 1.1, 1.3, 2.5])
            status, body = http(
                "POST",
                f"{augur}/v1/observe",
                json.dumps({"model": mid, "latency_ms": observed}).encode(),
                "application/json",
            )
            if status != 200:
                errors.append(f"POST /v1/observe: {status} {body[:200]!r}")
        http("POST", f"{augur}/v1/predict", b"{\"model\": ", "application/json")  # a 400
        http("GET", f"{augur}/v1/state")
        time.sleep(0.3)
    return ids, errors


def dashboard_queries():
    out = []
    for path in sorted(glob.glob("dashboards/*.json")):
        with open(path) as f:
            doc = json.load(f)

        def walk(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "expr" and isinstance(v, str):
                        out.append((path, v))
                    else:
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(doc)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--augur", default="target/release/augur")
    args = ap.parse_args()
    exe = os.path.abspath(args.augur)
    rules = os.path.abspath("dashboards/alerts.yml")
    tmp = tempfile.mkdtemp(prefix="augur-prometheus-")
    daemon = board = prom = None
    failures = []
    passed = [0]
    skipped_total = [0]
    try:
        daemon = Daemon(exe, tmp)
        log(f"== augur serve on {daemon.url} (state in {tmp})")
        wait_for("augur /ready", lambda: http("GET", f"{daemon.url}/ready")[0] == 200, 90)

        fixture = os.path.abspath("tests/fixtures/jetson/sys")
        trace = os.path.abspath("tests/fixtures/jetson/counters.txt")
        board = Daemon(
            exe,
            tmp,
            "board",
            ["--set", f"sense.sysfs_root={fixture}", "--set", f"sense.counter_trace={trace}"],
        )
        log(f"== augur serve on {board.url} reading sysfs from {fixture}, counters from {trace}")
        wait_for("the fixture board's /ready", lambda: http("GET", f"{board.url}/ready")[0] == 200, 90)

        prom = Prometheus(tmp, [daemon.addr, board.addr], rules)
        log(f"== prometheus on {prom.url}, scraping every 1 s")
        try:
            wait_for("prometheus /-/ready", lambda: http("GET", f"{prom.url}/-/ready")[0] == 200, 60)
        except SystemExit:
            log(prom.tail())
            raise

        log(f"== traffic for {TRAFFIC_SECONDS} s: imports, predictions, observations")
        stop = threading.Event()
        ids, errors = traffic(daemon.url, TRAFFIC_SECONDS, stop)
        failures += errors
        log(f"   {len(ids)} models imported, {len(errors)} unexpected answers")

        for d in (daemon, board):
            log(f"== promtool check metrics on {d.url}/metrics")
            status, metrics = http("GET", f"{d.url}/metrics")
            if status != 200:
                failures.append(f"GET {d.url}/metrics: {status}")
            lint = subprocess.run(
                ["promtool", "check", "metrics"], input=metrics, capture_output=True, timeout=30
            )
            problems = (lint.stdout + lint.stderr).decode().strip()
            families = len(re.findall(rb"^# TYPE ", metrics, re.M))
            if lint.returncode != 0 or problems:
                failures.append(f"promtool check metrics on {d.url} (exit {lint.returncode}):\n{problems}")
            else:
                passed[0] += 1
                log(f"   0 problems in {families} families")

        def up():
            r, _ = prom.query('up{job="augur"}')
            return len(r or []) == 2 and all(s["value"][1] == "1" for s in r)

        wait_for('up{job="augur"} == 1 for both daemons', up, 30)
        passed[0] += 1
        log('== up{job="augur"} is 1 for both daemons')
        r, err = prom.query('augur_build_info{job="augur"}')
        if not r:
            failures.append(f"augur_build_info has no series in Prometheus ({err})")
        else:
            log(f"   augur_build_info{{version=\"{r[0]['metric'].get('version')}\"}} = {r[0]['value'][1]}")
        r, err = prom.query('count({job="augur", __name__=~"augur_.+"})')
        log(f"   {r[0]['value'][1] if r else 0} augur series stored")

        status, body = http("GET", f"{prom.url}/api/v1/rules")
        groups = json.loads(body).get("data", {}).get("groups", []) if status == 200 else []
        rules_loaded = sum(len(g.get("rules", [])) for g in groups)
        if rules_loaded == 0:
            failures.append("Prometheus loaded no alert rule from dashboards/alerts.yml")
        else:
            passed[0] += 1
            log(f"   {rules_loaded} alert rules loaded")

        sensors, _ = prom.query('augur_sensor_up{job="augur"}')
        sensor_up = {}
        for s in sensors or []:
            name = s["metric"].get("sensor")
            sensor_up[name] = sensor_up.get(name, False) or s["value"][1] == "1"
        status, body = http("GET", f"{daemon.url}/v1/state")
        reasons = {}
        cpus = []
        if status == 200:
            snapshot = json.loads(body).get("snapshot", {})
            for s in snapshot.get("sensors", []):
                reasons[s.get("name")] = s.get("reason")
            cpus = snapshot.get("cpus", [])

        queries = dashboard_queries()
        log(f"== {len(queries)} dashboard queries (instance=~.*, rate window {RATE_WINDOW})")
        answered = skipped = 0
        for path, expr in queries:
            q = expr.replace("$instance", ".*").replace("$__rate_interval", RATE_WINDOW)
            result, err = prom.query(q)
            if err is not None:
                failures.append(f"{path}: `{expr}`: {err}")
                continue
            values = [s["value"][1] for s in result]
            if values and any(v not in ("NaN", "+Inf", "-Inf") for v in values):
                answered += 1
                continue
            names = re.findall(r"augur_[a-z0-9_]+", q)
            sensor = next((sn for n in names for p, sn in SENSOR_OF if n.startswith(p)), None)
            if sensor is not None and not sensor_up.get(sensor, False):
                skipped += 1
                log(f"   skipped: `{q}`: sensor {sensor} is unavailable here ({reasons.get(sensor)})")
                continue
            field = next((CPU_FIELD_OF[n] for n in names if n in CPU_FIELD_OF), None)
            if field and cpus and all(c.get(field) is None for c in cpus):
                skipped += 1
                log(f"   skipped: `{q}`: no CPU reports {field} here (GET /v1/state: cpus[].{field} null)")
                continue
            what = "no data" if not values else f"only {values}"
            failures.append(f"{path}: `{q}`: {what}")
        passed[0] += answered
        skipped_total[0] = skipped
        log(f"   {answered} returned data, {skipped} skipped for what neither this machine nor the fixture has")
    finally:
        if prom:
            prom.stop()
        for d in (daemon, board):
            if d:
                d.stop()
                if d.proc.returncode not in (0, None):
                    failures.append(f"augur serve exited with {d.proc.returncode}:\n{d.tail()}")
        if failures and daemon:
            log("-- augur log --\n" + daemon.tail())
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        log(f"FAIL: {f}")
    # Counted as: each dashboard query that returned data, promtool on /metrics, up, the rules.
    log(f"prometheus: {passed[0]} passed, {len(failures)} failed, {skipped_total[0]} skipped")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
