//! Model import and decomposition, end to end: the 22 zoo models against their reference MACs, the
//! nn-Meter IR fixtures against MACs computed by hand (nn-Meter's own MobileNetV3-Small IR against
//! MACs counted from its JSON), the kernels against tract's optimised graph, the
//! memory requirement against tract's real RSS, and every kind of bad input through the CLI.
//!
//! Needs the development zoo (unpacked on demand from `data/zoo/`). Run with `--release`.
mod common;

use augur::kernels::{Decomposition, FusionRules, KernelKind, decompose};
use augur::model::{Attr, Graph, ImportError, import_bytes, import_path};
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use common::{repo, zoo_model};

const ZOO: [&str; 22] = [
    "alexnet_224",
    "densenet121_224",
    "efficientnet_b0_224",
    "efficientnet_b1_240",
    "googlenet_224",
    "mnasnet0_5_224",
    "mnasnet1_0_224",
    "mobilenet_v2_160",
    "mobilenet_v2_224",
    "mobilenet_v3_large_224",
    "mobilenet_v3_small_224",
    "regnet_x_400mf_224",
    "regnet_y_400mf_224",
    "resnet18_128",
    "resnet18_224",
    "resnet34_224",
    "resnet50_224",
    "resnext50_32x4d_224",
    "shufflenet_v2_x0_5_224",
    "shufflenet_v2_x1_0_224",
    "squeezenet1_0_224",
    "squeezenet1_1_224",
];

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/nnmeter").join(name)
}

fn augur() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_augur"));
    // A panic must not slip through unnoticed because backtraces happen to be off.
    c.env("RUST_BACKTRACE", "1");
    c
}

fn decomposed(g: &Graph) -> Decomposition {
    decompose(g, &FusionRules::tract_default()).expect("decomposes")
}

// ---------------------------------------------------------------------------------------------------
// MACs of the zoo against the reference
// ---------------------------------------------------------------------------------------------------

#[test]
fn zoo_inspect_json_macs_within_one_percent_of_reference() {
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::zoo_reference()).expect("read zoo-dev.reference.json"),
    )
    .expect("reference is JSON");
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    eprintln!(
        "{:<26} {:>14} {:>14} {:>9}",
        "model", "augur MACs", "reference", "error %"
    );
    for m in ZOO {
        let out = augur()
            .args(["inspect", "--json"])
            .arg(zoo_model(m))
            .output()
            .expect("run augur");
        assert!(
            out.status.success(),
            "{m}: augur inspect --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
        let macs = d["macs"].as_u64().expect("macs");
        let want = reference[m]["macs"].as_u64().expect("reference macs");
        let err = (macs as f64 - want as f64).abs() / want as f64 * 100.0;
        worst = worst.max(err);
        eprintln!("{m:<26} {macs:>14} {want:>14} {err:>9.4}");
        if err > 1.0 {
            failures.push(format!("{m}: {macs} vs {want} ({err:.2} %)"));
        }
    }
    eprintln!("largest error: {worst:.4} %");
    assert!(
        failures.is_empty(),
        "MACs off by more than 1 %: {failures:?}"
    );
}

#[test]
fn inspect_json_has_the_documented_fields() {
    let out = augur()
        .args(["inspect", "--json"])
        .arg(fixture("classifier.json"))
        .output()
        .expect("run augur");
    assert!(out.status.success());
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for key in [
        "model",
        "runtime",
        "macs",
        "params",
        "weights_bytes",
        "peak_activation_bytes",
        "peak_memory_bytes",
        "input_shapes",
        "kernels",
    ] {
        assert!(d.get(key).is_some(), "missing `{key}`");
    }
    let k = &d["kernels"][0];
    for key in [
        "name",
        "kind",
        "ops",
        "input_shapes",
        "output_shape",
        "kernel_size",
        "stride",
        "dilation",
        "groups",
        "cin",
        "cout",
        "hin",
        "win",
        "macs",
        "flops",
        "weight_bytes",
        "input_bytes",
        "output_bytes",
        "arithmetic_intensity",
        "scratch_bytes",
    ] {
        assert!(k.get(key).is_some(), "kernel lacks `{key}`");
    }
    // The table form works on the same file.
    let out = augur()
        .arg("inspect")
        .arg(fixture("classifier.json"))
        .output()
        .expect("run augur");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("MACs"));
}

// ---------------------------------------------------------------------------------------------------
// nn-Meter IR
// ---------------------------------------------------------------------------------------------------

fn node<'a>(g: &'a Graph, name: &str) -> &'a augur::model::Node {
    g.nodes
        .iter()
        .find(|n| &*n.name == name)
        .unwrap_or_else(|| panic!("no node `{name}`"))
}

fn kinds(d: &Decomposition) -> Vec<KernelKind> {
    d.kernels.iter().map(|k| k.kind).collect()
}

fn output_shape(g: &Graph, name: &str) -> Vec<usize> {
    g.tensor(node(g, name).outputs[0]).shape.to_vec()
}

#[test]
fn nnmeter_conv_bn_relu() {
    let g = import_path(&fixture("conv_bn_relu.json"), None).expect("imports");
    let d = decomposed(&g);
    // 3×3 stride-2 SAME conv, 3 → 16 channels, 32×32 → 16×16: 16·16·16 outputs × 3·3·3.
    assert_eq!(d.macs, 16 * 16 * 16 * 27);
    // Conv weight 16·3·3·3 + BatchNorm 4·16 (scale, offset, mean, variance).
    assert_eq!(d.params, 432 + 64);
    assert_eq!(d.weights_bytes, 4 * 496);
    assert_eq!(d.input_shapes, vec![vec![1, 3, 32, 32]]);
    let conv = node(&g, "conv1/Conv2D");
    assert_eq!(conv.op, "Conv");
    assert_eq!(g.tensor(conv.inputs[1]).shape.to_vec(), vec![16, 3, 3, 3]);
    assert_eq!(conv.ints("strides"), Some(&[2, 2][..]));
    // TF SAME with an even input and stride 2 pads only at the end: [top, left, bottom, right].
    assert_eq!(conv.ints("pads"), Some(&[0, 0, 1, 1][..]));
    assert_eq!(output_shape(&g, "conv1/relu/Relu"), vec![1, 16, 16, 16]);
    assert_eq!(
        node(&g, "conv1/bn/FusedBatchNormV3").op,
        "BatchNormalization"
    );
    // The batchnorm joins the conv's kernel (how the Relu fuses is the fusion rules' business).
    assert_eq!(d.kernels[0].kind, KernelKind::Conv);
    assert_eq!(&d.kernels[0].ops[..2], &["Conv", "BatchNormalization"]);
}

#[test]
fn nnmeter_mobilenet_block() {
    let g = import_path(&fixture("mobilenet_block.json"), None).expect("imports");
    let d = decomposed(&g);
    let hw = 56 * 56;
    let expand = hw * 144 * 24;
    let depthwise = hw * 144 * 9;
    let project = hw * 24 * 144;
    assert_eq!(d.macs, (expand + depthwise + project) as u64);
    assert_eq!(d.macs, 25_740_288);
    // Convs 24·144 + 144·9 + 144·24, three BatchNorms over 144, 144 and 24 channels.
    assert_eq!(d.params, 3456 + 1296 + 3456 + 4 * (144 + 144 + 24));
    let dw = node(&g, "block/depthwise/depthwise");
    assert_eq!(dw.int("group"), Some(144));
    assert_eq!(g.tensor(dw.inputs[1]).shape.to_vec(), vec![144, 1, 3, 3]);
    let relu6 = node(&g, "block/expand/Relu6");
    assert_eq!(relu6.op, "Clip");
    assert_eq!(
        (relu6.float("min"), relu6.float("max")),
        (Some(0.0), Some(6.0))
    );
    let add = node(&g, "block/add");
    assert_eq!(add.op, "Add");
    assert_eq!(g.tensor(add.outputs[0]).shape.to_vec(), vec![1, 24, 56, 56]);
    // The three convolutions, whatever the rules fuse into them.
    let convs: Vec<&augur::kernels::Kernel> = d
        .kernels
        .iter()
        .filter(|k| {
            matches!(
                k.kind,
                KernelKind::Pointwise | KernelKind::Depthwise | KernelKind::Conv
            )
        })
        .collect();
    let conv_kinds: Vec<KernelKind> = convs.iter().map(|k| k.kind).collect();
    assert_eq!(
        conv_kinds,
        [
            KernelKind::Pointwise,
            KernelKind::Depthwise,
            KernelKind::Pointwise
        ]
    );
    assert_eq!(convs[1].groups, 144);
}

#[test]
fn nnmeter_classifier() {
    let g = import_path(&fixture("classifier.json"), None).expect("imports");
    let d = decomposed(&g);
    let branch1 = 14 * 14 * 32 * 32; // 1×1 conv
    let head = 5 * 5 * 128 * 64 * 9; // 3×3 VALID conv, 7×7 → 5×5
    let fc = 128 * 10;
    assert_eq!(d.macs, (branch1 + head + fc) as u64);
    assert_eq!(d.macs, 2_045_184);
    // 1×1 conv 32·32, head 128·64·9 + bias 128, fc 128·10 + bias 10.
    assert_eq!(d.params, 1024 + 73_728 + 128 + 1280 + 10);
    assert_eq!(d.weights_bytes, 4 * 76_170);
    assert_eq!(node(&g, "concat").attrs.get("axis"), Some(&Attr::Int(1)));
    assert_eq!(output_shape(&g, "concat"), vec![1, 64, 14, 14]);
    let pool = node(&g, "pool/AvgPool");
    assert_eq!(pool.op, "AveragePool");
    assert_eq!(output_shape(&g, "pool/AvgPool"), vec![1, 64, 7, 7]);
    let mean = node(&g, "gap/Mean");
    assert_eq!(mean.op, "ReduceMean");
    assert_eq!(mean.ints("axes"), Some(&[2, 3][..]));
    assert_eq!(output_shape(&g, "gap/Mean"), vec![1, 128]);
    assert_eq!(node(&g, "fc/MatMul").op, "MatMul");
    assert_eq!(output_shape(&g, "prob/Softmax"), vec![1, 10]);
    let k = kinds(&d);
    for want in [
        KernelKind::Pointwise,
        KernelKind::Pool,
        KernelKind::Concat,
        KernelKind::Conv,
        KernelKind::Reduce,
        KernelKind::MatMul,
        KernelKind::Softmax,
    ] {
        assert!(k.contains(&want), "no {want:?} kernel in {k:?}");
    }
}

#[test]
fn nnmeter_input_shape_override_rescales() {
    let g = import_path(&fixture("classifier.json"), Some(&[1, 32, 28, 28])).expect("imports");
    let d = decomposed(&g);
    // 28×28 → pool 14×14 → VALID 3×3 → 12×12.
    let want = 28 * 28 * 32 * 32 + 12 * 12 * 128 * 64 * 9 + 128 * 10;
    assert_eq!(d.macs, want as u64);
    assert_eq!(d.input_shapes, vec![vec![1, 32, 28, 28]]);
}

#[test]
fn nnmeter_broken_fixtures_are_named_errors() {
    match import_path(&fixture("broken_cycle.json"), None) {
        Err(ImportError::Cycle { node, file }) => {
            assert!(
                ["a/add", "b/Relu6", "c/Relu"].contains(&node.as_str()),
                "{node}"
            );
            assert!(file.ends_with("broken_cycle.json"));
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
    match import_path(&fixture("broken_unknown_op.json"), None) {
        Err(ImportError::UnsupportedOp { node, op, .. }) => {
            assert_eq!(node, "warp/ImageProjectiveTransformV3");
            assert_eq!(op, "ImageProjectiveTransformV3");
        }
        other => panic!("expected an unsupported op, got {other:?}"),
    }
    match import_path(&fixture("broken_shape.json"), None) {
        Err(ImportError::Shape { node, detail, .. }) => {
            assert_eq!(node, "stem/Conv2D");
            assert!(detail.contains("input channels"), "{detail}");
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

/// Small hand-written IRs for the cases the fixtures do not cover.
#[test]
fn nnmeter_malformed_inputs() {
    let input = r#""x": {"inbounds": [], "outbounds": [], "attr": {"name": "x", "type": "Placeholder", "output_shape": [[1, 8, 8, 4]], "attr": {"shape": [1, 8, 8, 4]}}}"#;
    let relu = |inb: &str, out: &str| {
        format!(
            r#""r": {{"inbounds": ["{inb}"], "outbounds": [], "attr": {{"name": "r", "type": "Relu", "output_shape": [{out}], "attr": {{}}}}}}"#
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "{ this is not json".into(), "not a valid nn-Meter IR"),
        ("empty object", "{}".into(), "no nodes"),
        // Only `{` marks nn-Meter IR; anything else is taken for ONNX and fails as such.
        ("a list", "[1, 2]".into(), "ONNX"),
        ("dangling inbound", format!("{{{input}, {}}}", relu("ghost", "[1,8,8,4]")), "`ghost`"),
        ("duplicate node", format!("{{{input}, {input}}}"), "appears twice"),
        ("wrong stated shape", format!("{{{input}, {}}}", relu("x", "[1,8,8,5]")), "the file says"),
        ("node without attr", r#"{"x": {"inbounds": []}}"#.into(), "node `x`"),
        (
            "unknown spatial dim",
            r#"{"x": {"inbounds": [], "attr": {"type": "Placeholder", "attr": {"shape": [1, -1, 8, 4]}}}, "r": {"inbounds": ["x"], "attr": {"type": "Relu"}}}"#.into(),
            "--input-shape",
        ),
        (
            "no placeholder",
            r#"{"c": {"inbounds": [], "attr": {"type": "Const", "attr": {"tensor_shape": [3]}}}}"#.into(),
            "no input",
        ),
    ];
    for (what, json, needle) in cases {
        match import_bytes(json.as_bytes(), "t.json", None) {
            Ok(_) => panic!("{what}: imported"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("t.json"), "{what}: {msg}");
                assert!(msg.contains(needle), "{what}: `{msg}` lacks `{needle}`");
                assert!(!msg.contains('\n'), "{what}: {msg}");
            }
        }
    }
    // An unknown batch is one image.
    let json = r#"{"x": {"inbounds": [], "attr": {"type": "Placeholder", "attr": {"shape": [null, 8, 8, 4]}}}, "r": {"inbounds": ["x"], "attr": {"type": "Relu"}}}"#;
    let g = import_bytes(json.as_bytes(), "t.json", None).expect("imports");
    assert_eq!(g.tensor(g.inputs[0]).shape.to_vec(), vec![1, 4, 8, 8]);
}

/// The importer follows TF's padding rules and nn-Meter's attribute spellings.
#[test]
fn nnmeter_padding_and_attribute_forms() {
    // SAME, stride 2, odd input 7: out 4, total pad (4-1)·2+3-7 = 2 → 1 before, 1 after.
    // VALID 3×3 on 7: out 5. Strides given as [1, s, s, 1] as in a GraphDef.
    let json = r#"{
      "x": {"inbounds": [], "attr": {"type": "Placeholder", "attr": {"shape": [1, 7, 7, 2]}}},
      "same": {"inbounds": ["x"], "attr": {"type": "Conv2D", "output_shape": [[1, 4, 4, 3]],
               "attr": {"padding": "SAME", "strides": [1, 2, 2, 1], "weight_shape": [3, 3, 2, 3]}}},
      "valid": {"inbounds": ["x"], "attr": {"type": "DepthwiseConv2dNative", "output_shape": [[1, 5, 5, 4]],
               "attr": {"padding": "VALID", "strides": [1, 1], "weight_shape": [3, 3, 2, 2]}}},
      "swish": {"inbounds": ["valid"], "attr": {"type": "Swish"}},
      "pool": {"inbounds": ["swish"], "attr": {"type": "MaxPool", "attr": {"ksize": [1, 2, 2, 1], "strides": [1, 2, 2, 1], "padding": "VALID"}}}
    }"#;
    let g = import_bytes(json.as_bytes(), "t.json", None).expect("imports");
    let same = node(&g, "same");
    assert_eq!(same.ints("pads"), Some(&[1, 1, 1, 1][..]));
    assert_eq!(output_shape(&g, "same"), vec![1, 3, 4, 4]);
    let valid = node(&g, "valid");
    assert_eq!(valid.int("group"), Some(2));
    assert_eq!(g.tensor(valid.inputs[1]).shape.to_vec(), vec![4, 1, 3, 3]);
    assert_eq!(output_shape(&g, "valid"), vec![1, 4, 5, 5]);
    // Swish is x·sigmoid(x), as ONNX exporters write it.
    assert_eq!(node(&g, "swish/sigmoid").op, "Sigmoid");
    assert_eq!(node(&g, "swish").op, "Mul");
    assert_eq!(output_shape(&g, "pool"), vec![1, 4, 2, 2]);
    let d = decomposed(&g);
    assert_eq!(d.macs, (4 * 4 * 3 * 2 * 9 + 5 * 5 * 4 * 9) as u64);
}

/// nn-Meter's own MobileNetV3-Small test model, as nn-Meter ships it.
const NNMETER_MOBILENETV3: &str = "mobilenetv3small_0.json";

/// The MACs of an nn-Meter IR file counted from its own JSON, independently of the importer: for each
/// Conv2D and DepthwiseConv2dNative node, the stated output H·W·Cout times the kernel area (from
/// `weight_shape` [kh, kw, cin, ·]) times the input channels one output reads (Cin of the stated input
/// shape for Conv2D, 1 for depthwise); for each MatMul, the stated output columns times the stated
/// input's last dimension (an unknown batch `-1` is one). The stated output shapes of these three ops
/// are not among those nn-Meter's own shape inference rewrites (see `src/model/nnmeter/stated.rs`).
fn nnmeter_macs_from_json(path: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read the IR")).expect("JSON");
    let dims = |x: &serde_json::Value| -> Vec<u64> {
        x.as_array()
            .expect("a shape")
            .iter()
            .map(|d| d.as_i64().expect("a dimension").max(1) as u64)
            .collect()
    };
    let mut macs = 0;
    for node in v.as_object().expect("an object").values() {
        let a = &node["attr"];
        let out = || dims(&a["output_shape"][0]);
        let inp = || dims(&a["input_shape"][0]);
        match a["type"].as_str().expect("a type") {
            op @ ("Conv2D" | "DepthwiseConv2dNative") => {
                let w = dims(&a["attr"]["weight_shape"]);
                let o = out();
                let per_output = if op == "Conv2D" { inp()[3] } else { 1 };
                macs += o[1] * o[2] * o[3] * w[0] * w[1] * per_output;
            }
            "MatMul" => {
                let (o, i) = (out(), inp());
                macs += o[0] * o[1] * i[1];
            }
            _ => {}
        }
    }
    macs
}

/// The IR nn-Meter itself ships: constant reads it dropped from the graph, and stated shapes its own
/// inference rewrote in place (the squeeze-excitation scale, the tensor before the final Mean).
#[test]
fn nnmeter_real_mobilenetv3_small_imports_decomposes_and_predicts() {
    let path = fixture(NNMETER_MOBILENETV3);
    let g = import_path(&path, None).expect("nn-Meter's own IR imports");
    let d = decomposed(&g);
    let independent = nnmeter_macs_from_json(&path);
    assert_eq!(d.macs, independent);
    // The published MobileNetV3-Small figure is about 56–60 M at 224; this variant counts 61.2 M.
    assert_eq!(d.macs, 61_233_632);
    assert_eq!(d.input_shapes, vec![vec![1, 3, 224, 224]]);
    // The squeeze-excitation scale keeps its real [1, C, 1, 1] shape; the product broadcasts it.
    assert_eq!(output_shape(&g, "mul"), vec![1, 16, 1, 1]);
    assert_eq!(output_shape(&g, "mul_1"), vec![1, 16, 56, 56]);
    assert_eq!(
        output_shape(&g, "conv13.1.hswish/mul_1"),
        vec![1, 1024, 7, 7]
    );
    assert_eq!(output_shape(&g, "Mean"), vec![1, 1024]);
    assert_eq!(output_shape(&g, "fc15.fc/MatMul"), vec![1, 1000]);
    let bns = g
        .nodes
        .iter()
        .filter(|n| n.op == "BatchNormalization")
        .count();
    assert_eq!(bns, 35);
    assert!(g.outputs.len() == 1, "outputs {:?}", g.outputs);

    let predictor = augur::predict::Predictor::new(None, augur::profile::Roofline::default());
    let base = predictor.base(&d);
    let p = predictor.predict(&d, &base, &augur::sense::Snapshot::default(), 1, true);
    assert!(
        p.latency_ms.is_finite() && p.latency_ms > 0.0,
        "{}",
        p.latency_ms
    );
    assert!(!p.calibrated);
    assert!(p.peak_memory_bytes > 0);

    // The command line takes the file as it is.
    let o = augur()
        .args(["inspect", "--json"])
        .arg(&path)
        .output()
        .expect("run augur inspect");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect --json is JSON");
    assert_eq!(v["macs"].as_u64(), Some(independent), "{v}");
}

/// A missing inbound is an error unless it names a constant read (`…/read`), and a stated shape
/// that differs is accepted only where a consumer's rewrite in nn-Meter's inference explains it.
#[test]
fn nnmeter_constant_reads_and_rewritten_shapes() {
    let x = r#""x": {"inbounds": [], "attr": {"type": "Placeholder", "attr": {"shape": [1, 8, 8, 4]}}}"#;
    let bn = r#""bn": {"inbounds": ["x", "bn/moving_variance/read"], "attr": {"type": "FusedBatchNormV3", "output_shape": [[1, 8, 8, 4]]}}"#;
    let json = format!("{{{x}, {bn}}}");
    let g = import_bytes(json.as_bytes(), "t.json", None).expect("a dropped constant read imports");
    assert_eq!(node(&g, "bn").op, "BatchNormalization");
    let json = format!("{{{x}, {}}}", bn.replace("/read", "/value"));
    let e = import_bytes(json.as_bytes(), "t.json", None).unwrap_err();
    assert!(e.to_string().contains("bn/moving_variance/value"), "{e}");

    // A [1, 1, 1, 4] scale whose stated shape a broadcasting consumer raised to [1, 8, 8, 4].
    let se = |consumer: &str| {
        format!(
            r#"{{{x},
            "pool": {{"inbounds": ["x"], "attr": {{"type": "AvgPool", "output_shape": [[1, 1, 1, 4]],
                     "attr": {{"ksize": [8, 8], "strides": [1, 1], "padding": "VALID"}}}}}},
            "scale": {{"inbounds": ["pool"], "attr": {{"type": "Sigmoid", "output_shape": [[1, 8, 8, 4]]}}}},
            "out": {{"inbounds": ["scale", "x"], "attr": {{"type": "{consumer}",
                     "input_shape": [[1, 8, 8, 4], [1, 8, 8, 4]], "output_shape": [[1, 8, 8, 4]]}}}}}}"#
        )
    };
    let g = import_bytes(se("Mul").as_bytes(), "t.json", None).expect("a raised shape imports");
    assert_eq!(output_shape(&g, "scale"), vec![1, 4, 1, 1]);
    assert_eq!(output_shape(&g, "out"), vec![1, 4, 8, 8]);
    // Concatenation does not broadcast in nn-Meter's inference: the same statement is an error.
    let e = import_bytes(se("ConcatV2").as_bytes(), "t.json", None).unwrap_err();
    assert!(e.to_string().contains("the file says"), "{e}");
}

// ---------------------------------------------------------------------------------------------------
// Decomposition against tract's optimised graph
// ---------------------------------------------------------------------------------------------------

/// The kernel group of a node of tract's optimised graph; `None` for nodes that are parts of other
/// kernels (constants, views, im2col, packing, padding, the strided read of a 1×1 stride-2 conv).
fn tract_group(model: &TypedModel, node: &TypedNode) -> Result<Option<&'static str>, String> {
    let op = node.op.name();
    let from_reduce = || {
        node.inputs
            .first()
            .is_some_and(|i| model.node(i.node).op.name().starts_with("Reduce"))
    };
    Ok(match op.as_ref() {
        "Const" | "Source" | "IntoShape" | "Pad" | "LazyIm2col" | "OptMatMulPack"
        | "Downsample" => None,
        "OptMatMul" => Some("matmul"),
        "DepthWiseConv" => Some("depthwise"),
        o if o.starts_with("Reduce") => Some("reduce"),
        // Global average pooling is a sum and a multiplication by 1/(h·w): one reduce kernel.
        "OptMulByScalar" | "Mul" if from_reduce() => None,
        o if o.starts_with("OptBinChain") => Some("elementwise"),
        "Silu" | "Sigmoid" | "HardSwish" | "OptMaxByScalar" | "OptMulByScalar"
        | "OptAddByScalar" | "OptAddUnicast" | "OptMulUnicast" | "OptBinUnicast" | "Add"
        | "Mul" | "Sub" | "Div" | "Max" | "Min" => Some("elementwise"),
        "OptMaxPool" | "OptSumPool" => Some("pool"),
        "Concat" => Some("concat"),
        "Slice" | "MoveAxis" => Some("data_movement"),
        "Softmax" => Some("softmax"),
        other => {
            return Err(format!(
                "tract op `{other}` ({}) is not classified",
                node.name
            ));
        }
    })
}

fn augur_group(k: KernelKind) -> &'static str {
    match k {
        KernelKind::Conv | KernelKind::Pointwise | KernelKind::MatMul => "matmul",
        KernelKind::Depthwise => "depthwise",
        KernelKind::Pool => "pool",
        KernelKind::Reduce => "reduce",
        KernelKind::Elementwise => "elementwise",
        KernelKind::Concat => "concat",
        KernelKind::Softmax => "softmax",
        KernelKind::DataMovement => "data_movement",
        KernelKind::Other => "other",
    }
}

/// tract count minus augur count, per group, where they differ for a documented reason
/// (`docs/validation.md`, "Kernels against tract's optimised graph").
const KNOWN_DIFFERENCES: &[(&str, &[(&str, i64)])] = &[
    // classifier.4: the matrix-vector Gemm's bias and Relu run as a separate Add+Max chain.
    ("alexnet_224", &[("elementwise", 1)]),
    // Squeeze-excitation fc2 bias as a separate OptAddUnicast (all blocks but the first).
    ("efficientnet_b0_224", &[("elementwise", 15)]),
    ("efficientnet_b1_240", &[("elementwise", 22)]),
    // 1×1 convs reading a Concat run as one matmul per concatenated input (+ slices, + Add+Relu).
    (
        "googlenet_224",
        &[("matmul", 46), ("data_movement", 24), ("elementwise", 4)],
    ),
    // features.1: the residual Add stays apart (a reshape between the matmul and the Add).
    ("mobilenet_v3_large_224", &[("elementwise", 1)]),
    // features.1: HardSigmoid folded into the SE fc2 matmul's epilogue.
    ("mobilenet_v3_small_224", &[("elementwise", -1)]),
    // Identity-shortcut blocks: residual Add + Relu stay a separate chain.
    ("regnet_x_400mf_224", &[("elementwise", 18)]),
    // Same, plus the SE fc2 bias as a separate OptAddUnicast.
    ("regnet_y_400mf_224", &[("elementwise", 28)]),
    // The last channel shuffle's Transpose is folded into conv5's weights.
    ("shufflenet_v2_x0_5_224", &[("data_movement", -1)]),
    ("shufflenet_v2_x1_0_224", &[("data_movement", -1)]),
    // A Concat read only by a 1×1 conv becomes one matmul per input, accumulating: no concat.
    ("squeezenet1_0_224", &[("concat", -6), ("matmul", 6)]),
    ("squeezenet1_1_224", &[("concat", -6), ("matmul", 6)]),
];

fn tract_counts(path: &Path) -> BTreeMap<&'static str, i64> {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_optimized())
        .unwrap_or_else(|e| panic!("{}: tract: {e:#}", path.display()));
    let mut counts = BTreeMap::new();
    for id in model.eval_order().expect("eval order") {
        let node = model.node(id);
        match tract_group(&model, node) {
            Ok(Some(g)) => *counts.entry(g).or_insert(0) += 1,
            Ok(None) => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    counts
}

#[test]
fn decomposition_matches_tract_optimised_graph() {
    let mut failures = Vec::new();
    eprintln!(
        "{:<26} {:>6} {:>6}  per group tract/augur (differences marked *)",
        "model", "tract", "augur"
    );
    for m in ZOO {
        let path = zoo_model(m);
        let tract = tract_counts(&path);
        let g = import_path(&path, None).expect("imports");
        let d = decomposed(&g);
        let mut ours: BTreeMap<&'static str, i64> = BTreeMap::new();
        for k in &d.kernels {
            *ours.entry(augur_group(k.kind)).or_insert(0) += 1;
        }
        let known: BTreeMap<&str, i64> = KNOWN_DIFFERENCES
            .iter()
            .find(|(name, _)| *name == m)
            .map(|(_, diffs)| diffs.iter().copied().collect())
            .unwrap_or_default();
        let mut groups: Vec<&str> = tract.keys().chain(ours.keys()).copied().collect();
        groups.sort_unstable();
        groups.dedup();
        let mut line = String::new();
        for grp in groups {
            let t = tract.get(grp).copied().unwrap_or(0);
            let a = ours.get(grp).copied().unwrap_or(0);
            let want = known.get(grp).copied().unwrap_or(0);
            let mark = if t != a { "*" } else { "" };
            line.push_str(&format!(" {grp}={t}/{a}{mark}"));
            if t - a != want {
                failures.push(format!(
                    "{m} {grp}: tract {t}, augur {a} (documented difference {want})"
                ));
            }
        }
        eprintln!(
            "{m:<26} {:>6} {:>6} {line}",
            tract.values().sum::<i64>(),
            ours.values().sum::<i64>()
        );
    }
    assert!(
        failures.is_empty(),
        "undocumented differences: {failures:#?}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Memory against tract's real RSS
// ---------------------------------------------------------------------------------------------------

/// A one-conv model (1×1 conv, 3 → 8 channels on 8×8): what loading and running any model costs in
/// RSS beyond the model itself (tract's code pages, its thread pool, allocator arenas).
fn tiny_conv_model() -> pb::ModelProto {
    use pb::tensor_shape_proto::dimension::Value::DimValue;
    let weight = pb::TensorProto {
        name: "w".into(),
        dims: vec![8, 3, 1, 1],
        data_type: 1,
        float_data: (0..24).map(|i| i as f32 * 0.01).collect(),
        ..Default::default()
    };
    let conv = pb::NodeProto {
        name: "conv".into(),
        op_type: "Conv".into(),
        input: vec!["x".into(), "w".into()],
        output: vec!["y".into()],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "tiny".into(),
            node: vec![conv],
            initializer: vec![weight],
            input: vec![value_info(
                "x",
                1,
                &[DimValue(1), DimValue(3), DimValue(8), DimValue(8)],
            )],
            output: vec![pb::ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

const RSS_CHILD: &str = "AUGUR_RSS_CHILD_MODEL";

fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Child side of the RSS measurement: loads and runs one model in tract, prints RSS figures.
#[test]
#[ignore = "run by memory_agrees_with_tract_rss in a child process"]
fn rss_child() {
    let Ok(path) = std::env::var(RSS_CHILD) else {
        return;
    };
    let before = status_bytes("VmRSS");
    let plan = tract_onnx::onnx()
        .model_for_path(&path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract loads the model");
    let load_peak = status_bytes("VmHWM");
    // Hand the heap freed while parsing back to the OS: what stays is what tract holds.
    // SAFETY: malloc_trim only releases free memory of glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
    let loaded = status_bytes("VmRSS");
    // Reset the high-water mark, so the next one is that of inference alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let shape: Vec<usize> = plan
        .model()
        .input_fact(0)
        .ok()
        .and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
        .expect("static input shape");
    let input = Tensor::zero::<f32>(&shape).expect("input tensor");
    let out = plan.run(tvec!(input.into())).expect("tract runs the model");
    assert!(!out.is_empty());
    let run_peak = status_bytes("VmHWM");
    drop(out);
    drop(plan);
    unsafe {
        libc::malloc_trim(0);
    }
    let after = status_bytes("VmRSS");
    println!("\nRSS {before} {loaded} {load_peak} {run_peak} {after}");
}

/// Models whose memory requirement is checked against tract: two weight-heavy, two activation-heavy.
const RSS_MODELS: [&str; 4] = [
    "resnet18_224",
    "mobilenet_v2_224",
    "squeezenet1_0_224",
    "efficientnet_b0_224",
];

/// RSS figures of loading and running one model in a fresh child process.
struct Rss {
    before: u64,
    /// After loading and optimising, once the heap freed while parsing is handed back.
    held: u64,
    /// High-water mark of loading (file bytes, protobuf, tract's graphs all alive at once).
    load_peak: u64,
    /// High-water mark of one inference, on top of `held`.
    run_peak: u64,
}

fn measure_rss(path: &Path) -> Rss {
    let exe = std::env::current_exe().expect("own executable");
    let out = Command::new(&exe)
        .args([
            "rss_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RSS_CHILD, path)
        .output()
        .expect("spawn rss child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let figures: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RSS "))
        .unwrap_or_else(|| {
            panic!(
                "{}: child printed no RSS line: {stdout} {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .split(' ')
        .filter_map(|v| v.parse().ok())
        .collect();
    let [before, held, load_peak, run_peak, _after] = figures[..] else {
        panic!("{}: bad RSS line {figures:?}", path.display());
    };
    Rss {
        before,
        held,
        load_peak,
        run_peak,
    }
}

/// A copy of a zoo model whose weight tensors all differ. The zoo's weights are one refilled pattern,
/// so tensors of equal shape are byte-identical, and tract keeps one copy of identical constants
/// (resnet18: 44.6 MiB of weights, 20.5 MiB distinct): real models have no such luck.
fn distinct_weights_copy(name: &str, dir: &Path) -> PathBuf {
    let mut m = zoo_proto(name);
    let g = m.graph.as_mut().expect("graph");
    for (ix, t) in g.initializer.iter_mut().enumerate() {
        if t.data_type != 1 {
            continue;
        }
        let nudge = (ix as f32 + 1.0) * 1e-4;
        for (i, chunk) in t.raw_data.chunks_exact_mut(4).enumerate() {
            let v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let w = v + nudge * ((i % 7) as f32 + 1.0);
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        for v in t.float_data.iter_mut() {
            *v += nudge;
        }
    }
    write(dir, &format!("{name}.onnx"), &m.encode_to_vec())
}

#[test]
fn memory_agrees_with_tract_rss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = write(dir.path(), "tiny.onnx", &tiny_conv_model().encode_to_vec());
    // What any model costs: tract's code, thread pool and arenas. Subtracted from every figure.
    let base = measure_rss(&tiny);
    let base_run = base.run_peak.saturating_sub(base.before);
    let base_load = base.load_peak.saturating_sub(base.before);
    let base_held = base.held.saturating_sub(base.before);
    let mib = |b: u64| b as f64 / 1048576.0;
    eprintln!(
        "fixed cost of tract (one-conv model): load {:.1} MiB, held+run {:.1} MiB",
        mib(base_load),
        mib(base_run)
    );
    eprintln!(
        "{:<22} {:>8} {:>8} {:>9} {:>8} {:>9} {:>6} {:>9} {:>6}",
        "model",
        "weights",
        "peak_act",
        "predicted",
        "held",
        "held+run",
        "ratio",
        "load HWM",
        "ratio"
    );
    let mut failures = Vec::new();
    for m in RSS_MODELS {
        let path = distinct_weights_copy(m, dir.path());
        let r = measure_rss(&path);
        // What inference needs: the model as tract holds it, plus the peak of one run.
        let run = r.run_peak.saturating_sub(r.before).saturating_sub(base_run);
        let load = r
            .load_peak
            .saturating_sub(r.before)
            .saturating_sub(base_load);
        let d = decomposed(&import_path(&path, None).expect("imports"));
        let predicted = d.peak_memory_bytes;
        let ratio = predicted as f64 / run.max(1) as f64;
        let held = r.held.saturating_sub(r.before).saturating_sub(base_held);
        eprintln!(
            "{m:<22} {:>8.1} {:>8.1} {:>9.1} {:>8.1} {:>9.1} {:>6.2} {:>9.1} {:>6.2}",
            mib(d.weights_bytes),
            mib(d.peak_activation_bytes),
            mib(predicted),
            mib(held),
            mib(run),
            ratio,
            mib(load),
            predicted as f64 / load.max(1) as f64,
        );
        if !(0.5..=1.5).contains(&ratio) {
            failures.push(format!("{m}: predicted {predicted} B, measured {run} B"));
        }
    }
    assert!(
        failures.is_empty(),
        "memory off by more than ±50 %: {failures:?}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Bad input through the CLI
// ---------------------------------------------------------------------------------------------------

/// Runs `augur inspect` on a file and checks the failure contract: non-zero exit, exactly one line on
/// stderr naming the file and every `needles` item, no panic, no backtrace.
fn assert_clean_failure(path: &Path, needles: &[&str], extra: &[&str]) -> String {
    let out: Output = augur()
        .arg("inspect")
        .arg(path)
        .args(extra)
        .output()
        .expect("run augur");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let what = path.display();
    assert!(!out.status.success(), "{what}: exited successfully");
    assert!(out.status.code().is_some(), "{what}: killed by a signal");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: stderr is not one line:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace") && !stderr.contains("RUST_"),
        "{what}: {stderr}"
    );
    assert!(
        stderr.contains(&what.to_string()),
        "{what}: file not named: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{what}: `{n}` not named: {stderr}");
    }
    stderr
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

fn zoo_proto(name: &str) -> pb::ModelProto {
    let bytes = std::fs::read(zoo_model(name)).expect("read zoo model");
    pb::ModelProto::decode(bytes.as_slice()).expect("decode zoo model")
}

#[test]
fn bad_input_empty_random_and_text_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_clean_failure(&write(dir.path(), "empty.onnx", b""), &["empty"], &[]);
    let mut x: u64 = 0x1234_5678;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert_clean_failure(&write(dir.path(), "random.onnx", &random), &[], &[]);
    assert_clean_failure(
        &write(
            dir.path(),
            "notes.txt",
            b"These are my notes.\nNot a model.\n",
        ),
        &[],
        &[],
    );
    assert_clean_failure(
        &write(dir.path(), "broken.json", b"{\"a\": {\"inbounds\": [}"),
        &["nn-Meter"],
        &[],
    );
    assert_clean_failure(&dir.path().join("missing.onnx"), &["cannot read"], &[]);
}

#[test]
fn bad_input_truncated_zoo_model() {
    let bytes = std::fs::read(zoo_model("squeezenet1_1_224")).expect("read zoo model");
    let dir = tempfile::tempdir().expect("temp dir");
    let n = bytes.len();
    for cut in [1, 16, 100, 4096, n / 3, n / 2, n * 9 / 10, n - 4096] {
        let p = write(dir.path(), &format!("cut{cut}.onnx"), &bytes[..cut]);
        assert_clean_failure(&p, &[], &[]);
    }
}

#[test]
fn bad_input_unsupported_operator() {
    let mut m = zoo_proto("squeezenet1_1_224");
    let g = m.graph.as_mut().expect("graph");
    g.node[3].op_type = "FancyConv".into();
    let name = g.node[3].name.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let p = write(dir.path(), "fancy.onnx", &m.encode_to_vec());
    assert_clean_failure(&p, &[&name, "FancyConv", "unsupported"], &[]);
}

#[test]
fn bad_input_names_with_newlines_stay_on_one_line() {
    let mut m = zoo_proto("squeezenet1_1_224");
    let g = m.graph.as_mut().expect("graph");
    g.node[3].op_type = "Fancy\nConv".into();
    g.node[3].name = "two\nlines".into();
    let dir = tempfile::tempdir().expect("temp dir");
    let p = write(dir.path(), "newlines.onnx", &m.encode_to_vec());
    assert_clean_failure(&p, &["two\\nlines", "unsupported"], &[]);
}

#[test]
fn bad_input_cycle() {
    let mut m = zoo_proto("squeezenet1_1_224");
    let g = m.graph.as_mut().expect("graph");
    // The second conv reads an output of the last node: a cycle through most of the network.
    let last = g
        .node
        .last()
        .and_then(|n| n.output.first())
        .cloned()
        .expect("last output");
    let conv = g
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type == "Conv")
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second conv");
    g.node[conv].input[0] = last;
    let dir = tempfile::tempdir().expect("temp dir");
    let p = write(dir.path(), "cycle.onnx", &m.encode_to_vec());
    assert_clean_failure(&p, &["cycle", "node `"], &[]);
}

fn value_info(
    name: &str,
    elem_type: i32,
    dims: &[pb::tensor_shape_proto::dimension::Value],
) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| pb::tensor_shape_proto::Dimension {
                            value: Some(d.clone()),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn bad_input_unresolvable_reshape() {
    use pb::tensor_shape_proto::dimension::Value::DimValue;
    // Reshape(x, s) where s is a graph input: the output shape is only known at run time.
    let node = pb::NodeProto {
        name: "reshape_by_input".into(),
        op_type: "Reshape".into(),
        input: vec!["x".into(), "s".into()],
        output: vec!["y".into()],
        ..Default::default()
    };
    let m = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "dynamic_reshape".into(),
            node: vec![node],
            input: vec![
                value_info(
                    "x",
                    1,
                    &[DimValue(1), DimValue(3), DimValue(8), DimValue(8)],
                ),
                value_info("s", 7, &[DimValue(2)]),
            ],
            output: vec![pb::ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let p = write(dir.path(), "reshape.onnx", &m.encode_to_vec());
    assert_clean_failure(&p, &["reshape_by_input", "unresolvable shape"], &[]);
}

#[test]
fn bad_input_symbolic_dimension_needs_input_shape() {
    let mut m = zoo_proto("squeezenet1_1_224");
    let g = m.graph.as_mut().expect("graph");
    let Some(pb::type_proto::Value::TensorType(t)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("input has no tensor type");
    };
    let shape = t.shape.as_mut().expect("input shape");
    shape.dim[2].value = Some(pb::tensor_shape_proto::dimension::Value::DimParam(
        "height".into(),
    ));
    let input = g.input[0].name.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let p = write(dir.path(), "symbolic.onnx", &m.encode_to_vec());
    assert_clean_failure(&p, &[&input, "--input-shape"], &[]);
    // …and --input-shape resolves it.
    let out = augur()
        .args(["inspect", "--json", "--input-shape", "1,3,224,224"])
        .arg(&p)
        .output()
        .expect("run augur");
    assert!(
        out.status.success(),
        "--input-shape did not resolve it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_nnmeter_fixtures_through_cli() {
    assert_clean_failure(&fixture("broken_cycle.json"), &["cycle", "node `"], &[]);
    assert_clean_failure(
        &fixture("broken_unknown_op.json"),
        &[
            "warp/ImageProjectiveTransformV3",
            "ImageProjectiveTransformV3",
        ],
        &[],
    );
    assert_clean_failure(
        &fixture("broken_shape.json"),
        &["stem/Conv2D", "input channels"],
        &[],
    );
}

/// A node whose output nothing reads (a generated DLA-style block left a pool dangling): tract drops
/// it when it analyses the model, and it never runs, so it is no kernel here either; the model
/// imports.
#[test]
fn a_node_whose_output_nothing_reads_is_left_out() {
    use augur::model::builder::GraphBuilder;
    let mut b = GraphBuilder::new("dangling");
    let x = b.input(&[1, 8, 16, 16]);
    let x = b.relu(x).unwrap();
    let kept = b.maxpool(x, [2, 2], [2, 2], [0, 0, 0, 0]).unwrap();
    let _dangling = b.maxpool(x, [2, 2], [2, 2], [0, 0, 0, 0]).unwrap();
    let y = b.relu(kept).unwrap();
    let g = b.finish(&[y]).unwrap();
    assert_eq!(g.nodes.iter().filter(|n| n.op == "MaxPool").count(), 2);
    let bytes = augur::model::export::to_onnx_bytes(&g).unwrap();
    let back = import_bytes(&bytes, "dangling.onnx", None)
        .unwrap_or_else(|e| panic!("a model with a dangling pool imports: {e}"));
    let pools: Vec<_> = back.nodes.iter().filter(|n| n.op == "MaxPool").collect();
    assert_eq!(pools.len(), 1);
    assert_eq!(
        back.tensors[pools[0].outputs[0]].shape.to_vec(),
        vec![1, 8, 8, 8]
    );
    assert_eq!(back.nodes.len(), 3);
}

/// The learner knows a model by its fingerprint: a model and the copy another daemon exports of
/// it (other bytes, other node names) share one, and architectures that run differently do not.
#[test]
fn a_fingerprint_survives_export_and_tells_architectures_apart() {
    let rules = FusionRules::tract_default();
    let mut seen = BTreeMap::new();
    for path in common::zoo_models() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let g = import_path(&path, None).unwrap();
        let d = decompose(&g, &rules).unwrap();
        let bytes = augur::model::export::to_onnx_bytes(&g).unwrap();
        let back = import_bytes(&bytes, "exported.onnx", None).unwrap();
        let e = decompose(&back, &rules).unwrap();
        if d.fingerprint() != e.fingerprint() {
            let unnamed = |k: &augur::kernels::Kernel| {
                let mut k = k.clone();
                k.name.clear();
                serde_json::to_string(&k).unwrap()
            };
            let first = d
                .kernels
                .iter()
                .zip(&e.kernels)
                .find(|(a, b)| unnamed(a) != unnamed(b))
                .map(|(a, b)| format!("{}\n{}", unnamed(a), unnamed(b)));
            panic!(
                "{name}: export changed it ({} → {} kernels); first difference:\n{first:?}",
                d.kernels.len(),
                e.kernels.len()
            );
        }
        if let Some(other) = seen.insert(d.fingerprint(), name.clone()) {
            panic!("{name} and {other} share a fingerprint");
        }
    }
    let g = import_path(&zoo_model("resnet18_224"), None).unwrap();
    let d = decompose(&g, &rules).unwrap();
    let mut renamed = d.clone();
    for k in &mut renamed.kernels {
        k.name.push_str("_renamed");
    }
    assert_eq!(
        d.fingerprint(),
        renamed.fingerprint(),
        "names are not the model"
    );
    let mut wider = d.clone();
    wider.kernels[0].cout += 1;
    assert_ne!(d.fingerprint(), wider.fingerprint());
}
