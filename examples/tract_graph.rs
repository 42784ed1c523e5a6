//! Prints tract's optimised graph of an ONNX model: one line per node with its op and fused micro-ops.
//! A development aid for writing and checking fusion rules.
use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: tract_graph MODEL.onnx"))?;
    let model = tract_onnx::onnx().model_for_path(&path)?.into_optimized()?;
    for id in model.eval_order()? {
        let node = model.node(id);
        let info = node.op.info()?.join(" | ");
        let outs: Vec<String> = node
            .outputs
            .iter()
            .map(|o| format!("{:?}", o.fact.shape))
            .collect();
        println!(
            "{:4} {:40} {:20} {} :: {}",
            id,
            node.name,
            node.op.name(),
            outs.join(","),
            info
        );
    }
    Ok(())
}
