#!/usr/bin/env python3
"""Times an ONNX model with ONNX Runtime (CPU), for augur's command backend.

    augur bench MODEL --backend 'cmd:python3 scripts/onnxruntime_bench.py {model} --threads {threads} --runs {runs} --warmup {warmup}'

Prints one JSON object on stdout, the reply augur reads:

    {"latency_ms": {"median": f, "p10": f, "p90": f}, "runs": n, "version": "onnxruntime 1.x",
     "samples_ms": [...]}

Inputs are filled with a fixed pattern at the model's static input shapes. Runs shorter than 50 us are
timed in batches (the per-run time is reported), so that Python's call overhead and timer jitter do not
swamp tiny single-kernel models. Needs `pip install onnxruntime numpy`. Exit status 2 on bad use.
"""
import argparse
import json
import sys
import time

BATCH_BELOW_S = 50e-6
SAMPLE_TARGET_S = 200e-6
MAX_BATCH = 1000


def fail(msg):
    print(f"onnxruntime_bench: {msg}", file=sys.stderr)
    return 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: ONNX Runtime's default)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    args = ap.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        return fail(f"{e}; install with `pip install onnxruntime numpy`")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(args.threads, 0)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(args.model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own exception types
        return fail(f"cannot load {args.model}: {e}")

    dtypes = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8,
        "tensor(bool)": np.bool_,
    }
    feeds = {}
    for inp in sess.get_inputs():
        if not all(isinstance(d, int) and d > 0 for d in inp.shape):
            return fail(f"input {inp.name} has no static shape {inp.shape}; fix it (augur --input-shape)")
        dt = dtypes.get(inp.type)
        if dt is None:
            return fail(f"input {inp.name} has unsupported type {inp.type}")
        n = int(np.prod(inp.shape))
        if np.issubdtype(dt, np.floating):
            v = ((np.arange(n) * 31 + 7) % 255) / 255.0 - 0.5
            feeds[inp.name] = v.astype(dt).reshape(inp.shape)
        else:
            feeds[inp.name] = np.zeros(inp.shape, dtype=dt)

    start = time.perf_counter()
    fastest = float("inf")
    for i in range(args.warmup):
        if i > 0 and time.perf_counter() - start > args.max_seconds:
            break
        t = time.perf_counter()
        sess.run(None, feeds)
        fastest = min(fastest, time.perf_counter() - t)
    batch = 1
    if args.warmup > 0 and fastest < BATCH_BELOW_S:
        batch = max(1, min(MAX_BATCH, int(SAMPLE_TARGET_S / max(fastest, 1e-9))))

    runs = max(args.runs, 1)
    samples = []
    for r in range(runs):
        if r >= min(runs, 3) and time.perf_counter() - start > args.max_seconds:
            break
        t = time.perf_counter()
        for _ in range(batch):
            sess.run(None, feeds)
        samples.append((time.perf_counter() - t) * 1e3 / batch)

    s = np.asarray(samples)
    print(json.dumps({
        "latency_ms": {
            "median": float(np.percentile(s, 50)),
            "p10": float(np.percentile(s, 10)),
            "p90": float(np.percentile(s, 90)),
        },
        "runs": len(samples),
        "version": f"onnxruntime {ort.__version__}",
        "samples_ms": [float(x) for x in samples],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
