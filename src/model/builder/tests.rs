//! Shapes and refusals of the builder's ops.
use super::*;
use crate::kernels::node_macs;
use crate::model::broadcast::broadcast;

fn out_shape(b: &GraphBuilder, t: TensorId) -> Vec<usize> {
    b.shape(t).map(|s| s.to_vec()).unwrap_or_default()
}

#[test]
fn conv_shapes_follow_onnx() {
    let mut b = GraphBuilder::new("t");
    let x = b.input(&[1, 3, 224, 224]);
    let y = b
        .conv(x, 64, [7, 7], [2, 2], [3, 3, 3, 3], [1, 1], 1, false)
        .unwrap();
    assert_eq!(out_shape(&b, y), vec![1, 64, 112, 112]);
    let z = b
        .conv(y, 64, [3, 3], [1, 1], [2, 2, 2, 2], [2, 2], 64, true)
        .unwrap();
    assert_eq!(out_shape(&b, z), vec![1, 64, 112, 112]);
    // Asymmetric padding, stride 2, odd input: TF "SAME"-style.
    let mut b = GraphBuilder::new("t");
    let x = b.input(&[1, 8, 15, 15]);
    let y = b
        .conv(x, 16, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 2, true)
        .unwrap();
    assert_eq!(out_shape(&b, y), vec![1, 16, 7, 7]);
    let g = b.finish(&[y]).unwrap();
    assert_eq!(g.tensor(g.nodes[0].inputs[1]).shape, vec![16, 4, 3, 3]);
    assert_eq!(g.tensor(g.nodes[0].inputs[2]).shape, vec![16]);
    assert_eq!(node_macs(&g, &g.nodes[0]), 16 * 7 * 7 * 4 * 9);
}

#[test]
fn bad_convs_are_refused() {
    let mut b = GraphBuilder::new("t");
    let x = b.input(&[1, 6, 8, 8]);
    let e = b.conv(x, 8, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 4, false);
    assert!(e.unwrap_err().to_string().contains("divisible"));
    let e = b.conv(x, 8, [9, 9], [1, 1], [0, 0, 0, 0], [1, 1], 1, false);
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("larger than the padded input")
    );
    // Dilation makes a 3×3 kernel 9 wide.
    assert!(
        b.conv(x, 8, [3, 3], [1, 1], [0; 4], [4, 4], 1, false)
            .is_err()
    );
    assert!(
        b.conv(x, 8, [3, 3], [0, 1], [0; 4], [1, 1], 1, false)
            .is_err()
    );
    let v = b.input(&[1, 6]);
    assert!(
        b.conv(v, 8, [1, 1], [1, 1], [0; 4], [1, 1], 1, false)
            .is_err()
    );
    assert!(b.relu(999).is_err());
    // Nothing was added by the failures.
    assert!(b.graph().nodes.is_empty());
}

#[test]
fn elementwise_and_broadcasting() {
    let mut b = GraphBuilder::new("t");
    let x = b.input(&[2, 16, 8, 8]);
    let s = b.global_avg_pool(x).unwrap();
    assert_eq!(out_shape(&b, s), vec![2, 16, 1, 1]);
    let s = b.sigmoid(s).unwrap();
    let y = b.mul(x, s).unwrap();
    assert_eq!(out_shape(&b, y), vec![2, 16, 8, 8]);
    let c = b.add_const(y).unwrap();
    assert_eq!(
        b.graph().tensor(b.graph().nodes[3].inputs[1]).shape,
        vec![1, 16, 1, 1]
    );
    let c = b.clip(c, 0.0, 6.0).unwrap();
    let c = b.hardswish(c).unwrap();
    let c = b.batchnorm(c).unwrap();
    let c = b.mul_const(c).unwrap();
    assert_eq!(out_shape(&b, c), vec![2, 16, 8, 8]);
    let other = b.input(&[1, 8, 8, 8]);
    assert!(b.add(x, other).is_err());
    assert!(b.clip(x, 1.0, 0.0).is_err());
    assert_eq!(broadcast(&[3, 1, 5], &[4, 1]), Some(vec![3, 4, 5]));
    assert_eq!(broadcast(&[], &[2, 3]), Some(vec![2, 3]));
    assert_eq!(broadcast(&[2, 3], &[3, 3]), None);
}

#[test]
fn matmul_and_gemm_shapes() {
    let mut b = GraphBuilder::new("t");
    let x = b.input(&[4, 512]);
    let y = b.gemm(x, 1000, true).unwrap();
    assert_eq!(out_shape(&b, y), vec![4, 1000]);
    let a = b.input(&[2, 1, 8, 32]);
    let w = b.weight(&[3, 32, 16]);
    let m = b.matmul(a, w).unwrap();
    assert_eq!(out_shape(&b, m), vec![2, 3, 8, 16]);
    let v = b.weight(&[16]);
    let mv = b.matmul(m, v).unwrap();
    assert_eq!(out_shape(&b, mv), vec![2, 3, 8]);
    assert!(b.matmul(a, v).is_err());
    let t = b.input(&[2, 3, 4]);
    assert!(b.gemm(t, 8, false).is_err());
    let g = b.finish(&[y, mv]).unwrap();
    assert_eq!(node_macs(&g, &g.nodes[0]), 4 * 1000 * 512);
    assert_eq!(node_macs(&g, &g.nodes[1]), 2 * 3 * 8 * 16 * 32);
}

#[test]
fn pools() {
    let mut b = GraphBuilder::new("t");
    let x = b.input(&[1, 64, 112, 112]);
    let p = b.maxpool(x, [3, 3], [2, 2], [1, 1, 1, 1]).unwrap();
    assert_eq!(out_shape(&b, p), vec![1, 64, 56, 56]);
    let a = b.avgpool(p, [2, 2], [2, 2], [0; 4]).unwrap();
    assert_eq!(out_shape(&b, a), vec![1, 64, 28, 28]);
    assert!(b.maxpool(x, [3, 3], [1, 1], [3, 0, 0, 0]).is_err());
    let small = b.input(&[1, 1, 2, 2]);
    assert!(b.avgpool(small, [3, 3], [1, 1], [0; 4]).is_err());
}

#[test]
fn data_movement_shapes() {
    let mut b = GraphBuilder::new("t");
    let x = b.input(&[1, 24, 28, 28]);
    let y = b.input(&[1, 8, 28, 28]);
    let c = b.concat(&[x, y], 1).unwrap();
    assert_eq!(out_shape(&b, c), vec![1, 32, 28, 28]);
    assert!(b.concat(&[x, y], 2).is_err());
    let r = b.reshape(c, &[0, 2, 16, -1]).unwrap();
    assert_eq!(out_shape(&b, r), vec![1, 2, 16, 784]);
    assert!(b.reshape(c, &[5, -1]).is_err());
    assert!(b.reshape(c, &[-1, -1]).is_err());
    let t = b.transpose(r, &[0, 2, 1, 3]).unwrap();
    assert_eq!(out_shape(&b, t), vec![1, 16, 2, 784]);
    assert!(b.transpose(r, &[0, 1, 1, 3]).is_err());
    let s = b.slice(c, &[1, 3], &[0, 1], &[16, 100], &[1, 2]).unwrap();
    assert_eq!(out_shape(&b, s), vec![1, 16, 28, 14]);
    assert!(b.slice(c, &[1], &[20], &[10], &[1]).is_err());
    let f = b.flatten(s, 1).unwrap();
    assert_eq!(out_shape(&b, f), vec![1, 16 * 28 * 14]);
    let sm = b.softmax(f, 1).unwrap();
    let g = b.finish(&[sm]).unwrap();
    assert_eq!(g.outputs, vec![sm]);
    assert_eq!(g.inputs.len(), 2);
}

#[test]
fn finish_checks_outputs() {
    let mut b = GraphBuilder::new("t");
    let x = b.input(&[1, 4]);
    assert!(b.clone().finish(&[x]).is_err(), "a graph without nodes");
    let y = b.relu(x).unwrap();
    let w = b.weight(&[4]);
    for bad in [vec![], vec![x], vec![w], vec![y, y], vec![99]] {
        assert!(b.clone().finish(&bad).is_err(), "outputs {bad:?}");
    }
    let g = b.finish(&[y]).unwrap();
    assert_eq!(g.outputs, vec![y]);
}
