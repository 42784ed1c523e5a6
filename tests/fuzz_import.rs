//! Fuzzing of the model importers (ONNX and nn-Meter IR) and of the decomposition behind them:
//! mutated zoo models and fixtures must give `Ok` or one clear one-line error, never a panic, an abort or
//! a hang.
//!
//! A supervisor (the test) runs workers (this same binary, re-run with `AUGUR_FUZZ_WORKER` set), so an
//! abort or a runaway allocation inside a dependency costs one worker, not the run; every case is derived
//! from (base seed, case number), so a finding is replayed by its number alone and written to
//! `target/fuzz-findings/`.
//!
//! - `fuzz_import_short`: 4000 cases (a few seconds), part of the normal test run.
//! - `fuzz_import_long` (ignored): runs for `AUGUR_FUZZ_SECS` seconds (default 600):
//!   `AUGUR_FUZZ_SECS=600 cargo test --release --test fuzz_import -- --ignored fuzz_import_long --nocapture`
//!
//! `AUGUR_FUZZ_SEED` changes the base seed; `AUGUR_FUZZ_REPLAY=N` replays case N in-process.
mod common;

use augur::kernels::{FusionRules, decompose};
use common::{repo, zoo_dir as zoo};
use prost::Message;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tract_onnx::pb;

const WORKER_ENV: &str = "AUGUR_FUZZ_WORKER";
/// A case that takes longer than this is a hang (the biggest seed imports in well under a second).
const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Address-space cap of a worker: a corrupt size must fail an allocation, not exhaust the machine.
const WORKER_MEMORY: u64 = 6 << 30;

/// splitmix64: small, fast, and the same everywhere, so case N is the same case on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const INTERESTING_I64: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    7,
    -7,
    255,
    256,
    65535,
    1 << 31,
    (1 << 31) - 1,
    1 << 32,
    1 << 40,
    i64::MAX,
    i64::MIN,
    -(1 << 31),
];

const OP_TYPES: &[&str] = &[
    "Conv",
    "Relu",
    "Add",
    "Mul",
    "Reshape",
    "Concat",
    "Gemm",
    "MatMul",
    "Pad",
    "Transpose",
    "Slice",
    "Gather",
    "Resize",
    "Split",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "BatchNormalization",
    "GlobalAveragePool",
    "MaxPool",
    "AveragePool",
    "Softmax",
    "Clip",
    "HardSigmoid",
    "Sigmoid",
    "ConvTranspose",
    "Shape",
    "ConstantOfShape",
    "Expand",
    "Tile",
    "ReduceMean",
    "Einsum",
    "Loop",
    "If",
    "Scan",
    "TopK",
    "NonZero",
    "Range",
    "CumSum",
    "LSTM",
    "NoSuchOp",
    "",
];

const TF_TYPES: &[&str] = &[
    "Conv2D",
    "DepthwiseConv2dNative",
    "FusedBatchNormV3",
    "Relu6",
    "MatMul",
    "Add",
    "AddV2",
    "AddN",
    "ConcatV2",
    "AvgPool",
    "MaxPool",
    "Mean",
    "Reshape",
    "Squeeze",
    "Identity",
    "Const",
    "Placeholder",
    "Pad",
    "BiasAdd",
    "Swish",
    "Softmax",
    "Bogus",
];

/// A seed: an ONNX model or an nn-Meter IR, as bytes, with its parsed form for structured mutation.
enum Seed {
    Onnx {
        name: String,
        bytes: Vec<u8>,
        proto: Box<pb::ModelProto>,
    },
    Json {
        name: String,
        bytes: Vec<u8>,
        value: serde_json::Value,
    },
}

impl Seed {
    fn bytes(&self) -> &[u8] {
        match self {
            Seed::Onnx { bytes, .. } | Seed::Json { bytes, .. } => bytes,
        }
    }
    fn name(&self) -> &str {
        match self {
            Seed::Onnx { name, .. } | Seed::Json { name, .. } => name,
        }
    }
}

/// The first `keep` nodes of a zoo model as a model of its own: small seeds make fast cases.
fn trimmed(model: &pb::ModelProto, keep: usize) -> pb::ModelProto {
    let mut m = model.clone();
    let Some(g) = m.graph.as_mut() else {
        return m;
    };
    g.node.truncate(keep);
    let used: HashSet<String> = g.node.iter().flat_map(|n| n.input.clone()).collect();
    g.initializer.retain(|t| used.contains(&t.name));
    g.input.retain(|i| used.contains(&i.name));
    g.value_info.clear();
    if let Some(last) = g.node.last().and_then(|n| n.output.first()) {
        g.output = vec![pb::ValueInfoProto {
            name: last.clone(),
            ..Default::default()
        }];
    }
    m
}

fn seeds() -> Vec<Seed> {
    let zoo = zoo();
    let mut out = Vec::new();
    // (model, node counts to keep; 0 = whole model)
    let plan: &[(&str, &[usize])] = &[
        ("squeezenet1_1_224", &[4, 12, 0]),
        ("resnet18_128", &[8, 14]),
        ("mobilenet_v3_small_224", &[16, 30]),
        ("shufflenet_v2_x0_5_224", &[20, 40]),
        ("efficientnet_b0_224", &[14]),
        ("densenet121_224", &[12]),
        ("googlenet_224", &[30]),
    ];
    for (model, keeps) in plan {
        let bytes = std::fs::read(zoo.join(format!("{model}.onnx"))).expect("read zoo model");
        let proto = pb::ModelProto::decode(bytes.as_slice()).expect("zoo model decodes");
        for &k in *keeps {
            let p = if k == 0 {
                proto.clone()
            } else {
                trimmed(&proto, k)
            };
            out.push(Seed::Onnx {
                name: format!("{model}[..{k}]"),
                bytes: p.encode_to_vec(),
                proto: Box::new(p),
            });
        }
    }
    let dir = repo().join("tests/fixtures/nnmeter");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("nn-Meter fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f).expect("read fixture");
        let value = serde_json::from_slice(&bytes).expect("fixture is JSON");
        out.push(Seed::Json {
            name: f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            value,
        });
    }
    out
}

/// One fuzz case: the input bytes, an optional input-shape override, and how they were made.
struct Case {
    bytes: Vec<u8>,
    input_shape: Option<Vec<usize>>,
    how: String,
}

fn case(seeds: &[Seed], base: u64, ix: u64) -> Case {
    let mut r = Rng::new(base ^ ix.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    // Whole models are slow to import: one case in 25 on them.
    let small: Vec<usize> = (0..seeds.len())
        .filter(|&i| !seeds[i].name().ends_with("[..0]"))
        .collect();
    let si = if r.chance(25) {
        r.below(seeds.len())
    } else {
        *r.pick(&small)
    };
    let seed = &seeds[si];
    let mut how = vec![seed.name().to_string()];
    let mut bytes = match seed {
        Seed::Onnx { proto, .. } if r.chance(2) => {
            let mut p = proto.as_ref().clone();
            for _ in 0..1 + r.below(3) {
                how.push(mutate_proto(&mut p, &mut r));
            }
            p.encode_to_vec()
        }
        Seed::Json { value, .. } if r.chance(2) => {
            let mut v = value.clone();
            for _ in 0..1 + r.below(3) {
                how.push(mutate_json(&mut v, &mut r));
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        _ => seed.bytes().to_vec(),
    };
    if how.len() == 1 || r.chance(4) {
        for _ in 0..1 + r.below(4) {
            how.push(mutate_bytes(&mut bytes, seeds, &mut r));
        }
    }
    let input_shape = if r.chance(8) {
        let shapes: &[&[usize]] = &[
            &[1, 3, 64, 64],
            &[1, 3, 1, 1],
            &[0, 3, 32, 32],
            &[1, 3],
            &[1, 3, 32, 32, 32],
            &[2, 3, 40, 48],
            &[1, 1 << 20, 1 << 20, 3],
        ];
        let s = r.pick(shapes).to_vec();
        how.push(format!("input_shape {s:?}"));
        Some(s)
    } else {
        None
    };
    Case {
        bytes,
        input_shape,
        how: how.join(" | "),
    }
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn mutate_bytes(b: &mut Vec<u8>, seeds: &[Seed], r: &mut Rng) -> String {
    if b.is_empty() {
        b.push(r.next() as u8);
        return "grow empty".into();
    }
    match r.below(9) {
        0 => {
            let n = 1 + r.below(8);
            for _ in 0..n {
                let i = r.below(b.len());
                b[i] ^= 1 << r.below(8);
            }
            format!("flip {n} bits")
        }
        1 => {
            let i = r.below(b.len());
            b[i] = *r.pick(&[0u8, 0xff, 0x7f, 0x80, 0x01, b'{', b'"', 0x0a]);
            format!("set byte {i}")
        }
        2 => {
            // Cut near either end more often: headers and trailing tensors are where lengths live.
            let at = match r.below(3) {
                0 => r.below(b.len().min(256)),
                1 => b.len() - r.below(b.len().min(256)) - 1,
                _ => r.below(b.len()),
            };
            b.truncate(at);
            format!("truncate at {at}")
        }
        3 => {
            let other = r.pick(seeds).bytes();
            if other.is_empty() {
                return "splice nothing".into();
            }
            let from = r.below(other.len());
            let len = 1 + r.below((other.len() - from).min(4096));
            let at = r.below(b.len());
            let end = (at + len).min(b.len());
            b.splice(at..end, other[from..from + len].iter().copied());
            format!("splice {len} bytes at {at}")
        }
        4 => {
            let at = r.below(b.len());
            let len = 1 + r.below((b.len() - at).min(1024));
            b.drain(at..at + len);
            format!("delete {len} at {at}")
        }
        5 => {
            let at = r.below(b.len());
            let len = 1 + r.below((b.len() - at).min(512));
            let chunk: Vec<u8> = b[at..at + len].to_vec();
            let to = r.below(b.len());
            b.splice(to..to, chunk);
            format!("duplicate {len} to {to}")
        }
        6 | 7 => {
            // Length-field corruption: a varint of an interesting size where a length may stand.
            let v = *r.pick(&[
                0u64,
                1,
                127,
                128,
                16384,
                (1 << 31) - 1,
                1 << 32,
                u64::MAX >> 1,
                u64::MAX,
            ]);
            let enc = varint(v);
            let at = r.below(b.len());
            let end = (at + enc.len()).min(b.len());
            b.splice(at..end, enc);
            format!("varint {v} at {at}")
        }
        _ => {
            let at = r.below(b.len());
            let n = 1 + r.below(16);
            let junk: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            b.splice(at..at, junk);
            format!("insert {n} random at {at}")
        }
    }
}

fn mutate_proto(m: &mut pb::ModelProto, r: &mut Rng) -> String {
    if r.chance(30) {
        let v = *r.pick(&[0i64, 1, 6, 9, 13, 17, 21, 9999, -1]);
        m.opset_import = vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: v,
        }];
        return format!("opset {v}");
    }
    let Some(g) = m.graph.as_mut() else {
        return "no graph".into();
    };
    let names: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().chain(&n.output).cloned())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .collect();
    match r.below(12) {
        0 if !g.node.is_empty() => {
            let i = r.below(g.node.len());
            let op = r.pick(OP_TYPES).to_string();
            g.node[i].op_type = op.clone();
            format!("node {i} op_type {op}")
        }
        1 if !g.node.is_empty() => {
            let i = r.below(g.node.len());
            let n = &mut g.node[i];
            if n.input.is_empty() {
                n.input.push(String::new());
            }
            let j = r.below(n.input.len());
            let what = match r.below(4) {
                0 => String::new(),
                1 => "nowhere".to_string(),
                2 => n.output.first().cloned().unwrap_or_default(),
                _ => r.pick(&names).clone(),
            };
            n.input[j] = what.clone();
            format!("node {i} input {j} = `{what}`")
        }
        2 if !g.node.is_empty() => {
            let i = r.below(g.node.len());
            let n = &mut g.node[i];
            if n.attribute.is_empty() {
                return format!("node {i} has no attribute");
            }
            let j = r.below(n.attribute.len());
            let a = &mut n.attribute[j];
            let v = *r.pick(INTERESTING_I64);
            match r.below(5) {
                0 => a.i = v,
                1 if !a.ints.is_empty() => {
                    let k = r.below(a.ints.len());
                    a.ints[k] = v;
                }
                2 => a.ints.push(v),
                3 => {
                    a.ints.pop();
                }
                _ => a.r#type = r.below(16) as i32,
            }
            format!("node {i} attribute `{}` ~ {v}", a.name)
        }
        3 if !g.initializer.is_empty() => {
            let i = r.below(g.initializer.len());
            let t = &mut g.initializer[i];
            match r.below(5) {
                0 if !t.dims.is_empty() => {
                    let k = r.below(t.dims.len());
                    t.dims[k] = *r.pick(INTERESTING_I64);
                }
                1 => t.dims.push(*r.pick(&[0i64, 1, 2, 1 << 20])),
                2 => t.data_type = r.below(20) as i32,
                3 => {
                    let n = t.raw_data.len();
                    t.raw_data.truncate(r.below(n + 1));
                }
                _ => t.dims.clear(),
            }
            format!("initializer {i} `{}` changed", t.name)
        }
        4 if !g.input.is_empty() => {
            let i = r.below(g.input.len());
            let Some(pb::type_proto::Value::TensorType(tt)) =
                g.input[i].r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                g.input[i].r#type = None;
                return format!("input {i} loses its type");
            };
            let Some(shape) = tt.shape.as_mut() else {
                return format!("input {i} has no shape");
            };
            if shape.dim.is_empty() {
                return format!("input {i} is a scalar");
            }
            let k = r.below(shape.dim.len());
            let v = match r.below(3) {
                0 => pb::tensor_shape_proto::dimension::Value::DimParam("batch".into()),
                _ => pb::tensor_shape_proto::dimension::Value::DimValue(*r.pick(INTERESTING_I64)),
            };
            shape.dim[k].value = Some(v);
            format!("input {i} dim {k} changed")
        }
        5 if !g.node.is_empty() => {
            let i = r.below(g.node.len());
            g.node.remove(i);
            format!("remove node {i}")
        }
        6 if g.node.len() > 1 => {
            let i = r.below(g.node.len());
            let j = r.below(g.node.len());
            g.node.swap(i, j);
            format!("swap nodes {i} {j}")
        }
        7 if !g.node.is_empty() => {
            let i = r.below(g.node.len());
            let n = g.node[i].clone();
            g.node.push(n);
            format!("duplicate node {i}")
        }
        8 if !g.node.is_empty() => {
            // A cycle: the first node reads the last node's output.
            let last = g.node.last().and_then(|n| n.output.first()).cloned();
            if let Some(o) = last {
                g.node[0].input.push(o);
            }
            "cycle last -> first".into()
        }
        9 => {
            g.output.clear();
            "no graph outputs".into()
        }
        10 => {
            g.input.clear();
            "no graph inputs".into()
        }
        _ if !g.node.is_empty() => {
            let i = r.below(g.node.len());
            g.node[i].domain = r.pick(&["", "ai.onnx", "com.microsoft", "x"]).to_string();
            format!("node {i} domain changed")
        }
        _ => "nothing".into(),
    }
}

/// The object under `key` of `v`, made an object if it is not one (mutations may have replaced it).
fn obj<'a>(
    v: &'a mut serde_json::Value,
    key: &str,
) -> &'a mut serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    if !v.is_object() {
        *v = Value::Object(Default::default());
    }
    let Value::Object(m) = v else {
        unreachable!("made an object above")
    };
    let e = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Default::default()));
    if !e.is_object() {
        *e = Value::Object(Default::default());
    }
    match e {
        Value::Object(inner) => inner,
        _ => unreachable!("made an object above"),
    }
}

fn mutate_json(v: &mut serde_json::Value, r: &mut Rng) -> String {
    use serde_json::{Value, json};
    let Value::Object(map) = v else {
        return "not an object".into();
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    if keys.is_empty() {
        return "empty".into();
    }
    let key = r.pick(&keys).clone();
    let other = r.pick(&keys).clone();
    let interesting = [
        json!(0),
        json!(-1),
        json!(1),
        json!(3),
        json!(1u64 << 40),
        json!(1e300),
        json!(2.5),
        json!(null),
        json!("SAME"),
        json!([]),
        json!([[]]),
        json!([1, 2]),
        json!([1, 0, 0, 1]),
        json!({}),
    ];
    let Some(node) = map.get_mut(&key) else {
        return "vanished".into();
    };
    if !node.is_object() {
        *node = json!({});
    }
    match r.below(8) {
        0 => {
            let t = r.pick(TF_TYPES).to_string();
            obj(node, "attr").insert("type".into(), json!(t));
            format!("{key}: type {t}")
        }
        1 => {
            if let Value::Object(m) = node {
                m.insert("inbounds".into(), json!([other.clone()]));
            }
            format!("{key}: inbounds [{other}]")
        }
        2 => {
            let field = *r.pick(&["output_shape", "input_shape"]);
            obj(node, "attr").insert(field.into(), r.pick(&interesting).clone());
            format!("{key}: {field} replaced")
        }
        3 => {
            let field = *r.pick(&[
                "strides",
                "dilations",
                "ksize",
                "kernel_shape",
                "weight_shape",
                "padding",
                "axis",
                "reduction_indices",
                "shape",
                "paddings",
                "pads",
                "transpose_b",
                "squeeze_dims",
            ]);
            let value = r.pick(&interesting).clone();
            let inner = obj(node, "attr").entry("attr").or_insert_with(|| json!({}));
            if !inner.is_object() {
                *inner = json!({});
            }
            if let Value::Object(m) = inner {
                m.insert(field.into(), value);
            }
            format!("{key}: attr {field} replaced")
        }
        4 => {
            let shape = json!([[1, r.below(40), r.below(40), r.below(300)]]);
            obj(node, "attr").insert("output_shape".into(), shape);
            format!("{key}: output_shape random")
        }
        5 => {
            map.remove(&key);
            format!("remove {key}")
        }
        6 => {
            if let Value::Object(m) = node {
                m.insert("outbounds".into(), json!([other.clone(), "ghost"]));
            }
            format!("{key}: outbounds changed")
        }
        _ => {
            *node = r.pick(&interesting).clone();
            format!("{key}: node replaced")
        }
    }
}

/// What a case did, as seen from inside the worker.
enum Verdict {
    Fine,
    /// An error message that is not one clear line naming the file.
    BadMessage(String),
}

fn exercise(c: &Case) -> Verdict {
    let file = "fuzz-input";
    match augur::model::import_bytes(&c.bytes, file, c.input_shape.as_deref()) {
        Ok(g) => match decompose(&g, &FusionRules::tract_default()) {
            Ok(d) => {
                // Touch the totals the CLI prints, as it would.
                let _ = serde_json::to_string(&d);
                Verdict::Fine
            }
            Err(e) => one_line(&format!("{file}: {e}"), file),
        },
        Err(e) => one_line(&e.to_string(), file),
    }
}

/// The CLI's error contract, applied as `augur` applies it: control characters from names in the file
/// are escaped onto one line; the message must then name the file and stay readable.
fn one_line(msg: &str, file: &str) -> Verdict {
    let mut line = String::new();
    for c in msg.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    if !line.starts_with(file) || line.len() > 4000 {
        Verdict::BadMessage(line.chars().take(300).collect())
    } else {
        Verdict::Fine
    }
}

fn base_seed() -> u64 {
    std::env::var("AUGUR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00A0_6075_2026)
}

/// The worker loop: runs cases `start..end` until `deadline`, one status line per case on stdout.
#[test]
#[ignore = "run by the fuzz supervisor"]
fn fuzz_worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let parts: Vec<u64> = spec.split(',').filter_map(|s| s.parse().ok()).collect();
    let [start, end, deadline_ms] = parts[..] else {
        panic!("bad {WORKER_ENV}={spec}");
    };
    // SAFETY: setrlimit only reads the struct we pass.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: WORKER_MEMORY,
            rlim_max: WORKER_MEMORY,
        };
        libc::setrlimit(libc::RLIMIT_AS, &lim);
    }
    let seeds = seeds();
    let base = base_seed();
    std::panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let msg: String = msg.replace('\n', " ").chars().take(200).collect();
        println!("PANIC {loc} {msg}");
    }));
    let out = std::io::stdout();
    // The harness has printed "test fuzz_worker ... " without a newline: start status lines afresh.
    let _ = writeln!(out.lock());
    let deadline = std::time::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    for ix in start..end {
        if std::time::SystemTime::now() > deadline {
            break;
        }
        let c = case(&seeds, base, ix);
        {
            let mut o = out.lock();
            let _ = writeln!(o, "CASE {ix}");
            let _ = o.flush();
        }
        let verdict = std::panic::catch_unwind(|| exercise(&c));
        let mut o = out.lock();
        match verdict {
            Ok(Verdict::Fine) => {}
            Ok(Verdict::BadMessage(m)) => {
                let _ = writeln!(o, "BADMSG {ix} {}", m.replace('\n', "\\n"));
            }
            Err(_) => {
                let _ = writeln!(o, "CAUGHT {ix}");
            }
        }
        let _ = o.flush();
    }
    let _ = writeln!(out.lock(), "DONE");
}

#[derive(Debug, Default)]
struct Report {
    cases: u64,
    /// (kind, case, detail): kind is panic, abort, hang or message.
    findings: Vec<(String, u64, String)>,
    workers: u64,
}

/// Runs cases `0..max_cases` in workers until `budget` is spent; records findings.
fn supervise(budget: Duration, max_cases: u64) -> Report {
    let exe = std::env::current_exe().expect("own executable");
    let started = Instant::now();
    let mut report = Report::default();
    let mut next = 0u64;
    while started.elapsed() < budget && next < max_cases {
        let deadline = std::time::SystemTime::now() + (budget - started.elapsed());
        let deadline_ms = deadline
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut child = Command::new(&exe)
            .args([
                "fuzz_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, format!("{next},{max_cases},{deadline_ms}"))
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fuzz worker");
        report.workers += 1;
        let stdout = child.stdout.take().expect("worker stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current: Option<u64> = None;
        let mut panic_msg = String::new();
        let mut done = false;
        let mut hung = false;
        loop {
            match rx.recv_timeout(CASE_TIMEOUT) {
                Ok(line) => {
                    if let Some(ix) = line.strip_prefix("CASE ") {
                        current = ix.parse().ok();
                        report.cases += 1;
                    } else if let Some(p) = line.strip_prefix("PANIC ") {
                        panic_msg = p.to_string();
                    } else if let Some(rest) = line.strip_prefix("CAUGHT ") {
                        let ix = rest.parse().unwrap_or(0);
                        report
                            .findings
                            .push(("panic".into(), ix, std::mem::take(&mut panic_msg)));
                    } else if let Some(rest) = line.strip_prefix("BADMSG ") {
                        let (ix, msg) = rest.split_once(' ').unwrap_or((rest, ""));
                        report.findings.push((
                            "message".into(),
                            ix.parse().unwrap_or(0),
                            msg.to_string(),
                        ));
                    } else if line == "DONE" {
                        done = true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    hung = true;
                    let _ = child.kill();
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().expect("wait for worker");
        let _ = reader.join();
        let resume = current.map_or(next, |c| c + 1);
        if hung {
            report
                .findings
                .push(("hang".into(), current.unwrap_or(next), String::new()));
        } else if !done || !status.success() {
            if let Some(c) = current {
                report.findings.push((
                    "abort".into(),
                    c,
                    format!("worker ended with {status}; {panic_msg}"),
                ));
            } else {
                panic!("fuzz worker failed before its first case: {status}");
            }
        }
        if done && current.is_none_or(|c| c + 1 >= max_cases) {
            break;
        }
        next = resume;
    }
    report
}

/// A finding's signature: a panic by its location, anything else by its kind and its message with the
/// names from the file (between backticks) left out.
fn signature(kind: &str, detail: &str) -> String {
    match kind {
        "panic" => format!("panic at {}", detail.split(' ').next().unwrap_or("")),
        _ => {
            let mut out = String::new();
            for (i, part) in detail.split('`').enumerate() {
                out.push_str(if i % 2 == 1 { "`…`" } else { part });
            }
            format!("{kind}: {}", out.chars().take(100).collect::<String>())
        }
    }
}

/// Writes up to three inputs per distinct finding to `target/fuzz-findings/`, with a summary.
fn record(report: &Report) {
    if report.findings.is_empty() {
        return;
    }
    let dir = repo().join("target/fuzz-findings");
    let _ = std::fs::create_dir_all(&dir);
    let seeds = seeds();
    let base = base_seed();
    let mut written: BTreeMap<String, usize> = BTreeMap::new();
    let mut summary = String::new();
    for (kind, ix, detail) in &report.findings {
        let n = written.entry(signature(kind, detail)).or_insert(0);
        *n += 1;
        if *n > 3 {
            continue;
        }
        let c = case(&seeds, base, *ix);
        let path = dir.join(format!("{kind}-{base:x}-{ix}.bin"));
        let _ = std::fs::write(&path, &c.bytes);
        summary.push_str(&format!(
            "{kind} case {ix} ({}) {detail}\n  {}\n",
            c.how,
            path.display()
        ));
    }
    let _ = std::fs::write(dir.join("summary.txt"), &summary);
    eprintln!("{summary}");
}

fn summarize(report: &Report, took: Duration) -> String {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut distinct: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (k, ix, detail) in &report.findings {
        *kinds.entry(k.as_str()).or_default() += 1;
        distinct.entry(signature(k, detail)).or_insert((0, *ix)).0 += 1;
    }
    let mut s = format!(
        "fuzz: {} cases in {:.0} s ({:.0}/s), {} workers, findings: {:?}",
        report.cases,
        took.as_secs_f64(),
        report.cases as f64 / took.as_secs_f64().max(1e-9),
        report.workers,
        kinds
    );
    for (sig, (n, first)) in &distinct {
        s.push_str(&format!("\n  {n:6} x {sig} (first: case {first})"));
    }
    s
}

#[test]
fn fuzz_import_short() {
    if std::env::var(WORKER_ENV).is_ok() {
        return;
    }
    let t = Instant::now();
    let report = supervise(Duration::from_secs(60), 4000);
    eprintln!("{}", summarize(&report, t.elapsed()));
    record(&report);
    assert!(report.cases >= 50, "too few cases ran: {}", report.cases);
    assert!(
        report.findings.is_empty(),
        "fuzzing found problems (see target/fuzz-findings/summary.txt): {:?}",
        report.findings
    );
}

#[test]
#[ignore = "long-running: AUGUR_FUZZ_SECS=600 cargo test --release --test fuzz_import -- --ignored"]
fn fuzz_import_long() {
    if std::env::var(WORKER_ENV).is_ok() {
        return;
    }
    let secs = std::env::var("AUGUR_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let t = Instant::now();
    let report = supervise(Duration::from_secs(secs), u64::MAX);
    eprintln!("{}", summarize(&report, t.elapsed()));
    record(&report);
    assert!(
        report.findings.is_empty(),
        "fuzzing found problems (see target/fuzz-findings/summary.txt)"
    );
}

/// Replays one case in-process (`AUGUR_FUZZ_REPLAY=N`), to debug a finding.
#[test]
#[ignore = "debugging aid"]
fn fuzz_replay() {
    let Some(ix) = std::env::var("AUGUR_FUZZ_REPLAY")
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        return;
    };
    let seeds = seeds();
    let c = case(&seeds, base_seed(), ix);
    eprintln!("case {ix}: {}", c.how);
    let r = augur::model::import_bytes(&c.bytes, "replay", c.input_shape.as_deref());
    match r {
        Ok(g) => eprintln!(
            "ok: {:?}",
            decompose(&g, &FusionRules::tract_default()).map(|d| d.macs)
        ),
        Err(e) => eprintln!("error: {e}"),
    }
}
