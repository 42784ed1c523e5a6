//! Peak memory of importing a JSON graph: an nn-Meter IR upload of 32 MiB peaks at no more than
//! three times its size (the body itself, the decoded node records and the graph IR), where
//! decoding through `serde_json::Value` took tens of times the body. A test binary of its own,
//! for the counting global allocator it measures with.
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes held now and the most held since the last reset.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = NOW.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(n: usize) {
    NOW.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        shrank(l.size());
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            // Counted as a new block beside the old until the old is let go: a moving realloc
            // holds both for a moment.
            grew(new);
            shrank(l.size());
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const H: usize = 8;
const C: usize = 16;
const E: usize = 64;

fn shape(c: usize) -> String {
    format!("[1, {H}, {H}, {c}]")
}

/// One node, as nn-Meter writes them (compact: a client need not indent).
/// `channels`: of the inputs and of the output.
fn node(
    out: &mut String,
    name: &str,
    op: &str,
    ins: &[&str],
    outs: &[&str],
    (c_in, c_out): (usize, usize),
    attr: &str,
) {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let in_shapes = vec![shape(c_in); ins.len()].join(",");
    let _ = write!(
        out,
        "\"{name}\":{{\"inbounds\":[{}],\"outbounds\":[{}],\"attr\":{{\"name\":\"{name}\",\"type\":\"{op}\",\
         \"input_shape\":[{in_shapes}],\"output_shape\":[{}],\"attr\":{{{attr}}}}}}},",
        list(ins),
        list(outs),
        shape(c_out)
    );
}

/// An inverted-residual block (expand, depthwise, project, each with batch norm; ReLU6; the
/// residual add) reading `prev`, whose add feeds block `i + 1` unless it is the last.
fn block(out: &mut String, i: usize, prev: &str, last: bool) {
    let n = |s: &str| format!("b{i}/{s}");
    let (ex, exbn, exr) = (n("expand/Conv2D"), n("expand/bn"), n("expand/Relu6"));
    let (dw, dwbn, dwr) = (n("dw/depthwise"), n("dw/bn"), n("dw/Relu6"));
    let (pr, prbn, add) = (n("project/Conv2D"), n("project/bn"), n("add"));
    let next = [
        format!("b{}/expand/Conv2D", i + 1),
        format!("b{}/add", i + 1),
    ];
    let next: Vec<&str> = if last {
        vec![]
    } else {
        next.iter().map(String::as_str).collect()
    };
    let conv = |k: usize, cin: usize, cout: usize| {
        format!(
            "\"data_format\":\"NHWC\",\"dilations\":[1,1],\"padding\":\"SAME\",\"strides\":[1,1],\
             \"kernel_shape\":[{k},{k}],\"weight_shape\":[{k},{k},{cin},{cout}]"
        )
    };
    let bn = "\"epsilon\":0.001";
    node(
        out,
        &ex,
        "Conv2D",
        &[prev],
        &[&exbn],
        (C, E),
        &conv(1, C, E),
    );
    node(out, &exbn, "FusedBatchNormV3", &[&ex], &[&exr], (E, E), bn);
    node(out, &exr, "Relu6", &[&exbn], &[&dw], (E, E), "");
    let dwa = format!(
        "\"data_format\":\"NHWC\",\"dilations\":[1,1],\"padding\":\"SAME\",\"strides\":[1,1],\
         \"kernel_shape\":[3,3],\"weight_shape\":[3,3,{E},1]"
    );
    node(
        out,
        &dw,
        "DepthwiseConv2dNative",
        &[&exr],
        &[&dwbn],
        (E, E),
        &dwa,
    );
    node(out, &dwbn, "FusedBatchNormV3", &[&dw], &[&dwr], (E, E), bn);
    node(out, &dwr, "Relu6", &[&dwbn], &[&pr], (E, E), "");
    node(
        out,
        &pr,
        "Conv2D",
        &[&dwr],
        &[&prbn],
        (E, C),
        &conv(1, E, C),
    );
    node(out, &prbn, "FusedBatchNormV3", &[&pr], &[&add], (C, C), bn);
    node(out, &add, "AddV2", &[&prbn, prev], &next, (C, C), "");
}

/// An nn-Meter IR graph of at least `bytes` bytes: an input and a chain of blocks.
fn generate(bytes: usize) -> Vec<u8> {
    let mut one = String::new();
    block(&mut one, 0, "input", false);
    let blocks = bytes / one.len() + 1;
    let mut s = String::with_capacity(bytes + bytes / 8);
    s.push('{');
    let _ = write!(
        s,
        "\"input\":{{\"inbounds\":[],\"outbounds\":[\"b0/expand/Conv2D\",\"b0/add\"],\"attr\":{{\
         \"name\":\"input\",\"type\":\"Placeholder\",\"output_shape\":[{}],\"attr\":{{\"shape\":{}}}}}}},",
        shape(C),
        shape(C)
    );
    for i in 0..blocks {
        let prev = if i == 0 {
            "input".to_string()
        } else {
            format!("b{}/add", i - 1)
        };
        block(&mut s, i, &prev, i + 1 == blocks);
    }
    s.pop();
    s.push('}');
    s.into_bytes()
}

// The bound holds because nothing is held twice or longer than needed: the decoder borrows from
// the body, its records are boxed and let go one by one as their nodes are lowered, the edges as
// soon as the nodes are wired; the graph IR shares shapes and boxes names and operand lists, and
// leaves ONNX's default attributes out.
#[test]
fn a_32_mib_nnmeter_upload_peaks_within_three_times_its_size() {
    let body = generate(32 << 20);
    assert!(body.len() >= 32 << 20, "{} bytes", body.len());
    // What is held now (the body among it) is the floor; the import's own bytes come on top.
    let floor = NOW.load(Ordering::Relaxed);
    PEAK.store(floor, Ordering::Relaxed);
    let g = augur::model::import_bytes(&body, "generated.json", None);
    let peak = PEAK.load(Ordering::Relaxed) - floor + body.len();
    let kept = NOW.load(Ordering::Relaxed) - floor;
    let g = g.unwrap_or_else(|e| panic!("the generated graph imports: {e}"));
    println!(
        "the graph IR alone holds {:.1} MiB ({} tensors)",
        kept as f64 / (1 << 20) as f64,
        g.tensors.len()
    );
    let ratio = peak as f64 / body.len() as f64;
    println!(
        "body {:.1} MiB, {} IR nodes; import peak {:.1} MiB = {ratio:.2} × the body",
        body.len() as f64 / (1 << 20) as f64,
        g.nodes.len(),
        peak as f64 / (1 << 20) as f64
    );
    assert!(g.nodes.len() > 50_000, "{} nodes", g.nodes.len());
    assert!(
        ratio <= 3.0,
        "importing {} bytes peaked at {peak} bytes ({ratio:.2} × the body)",
        body.len()
    );
}
