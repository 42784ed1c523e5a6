//! Development aid: writes the reference workload's networks as ONNX files, to time them one by
//! one beside models (which of its networks moves with which kind of model).
//!
//! Usage: write_reference DIR
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: write_reference DIR")?;
    std::fs::create_dir_all(&dir)?;
    for (i, g) in augur::workload::reference::graphs()?.iter().enumerate() {
        let path = std::path::Path::new(&dir).join(format!("reference{i}_{}.onnx", g.name));
        std::fs::write(&path, augur::model::export::to_onnx_bytes(g)?)?;
        println!("{}", path.display());
    }
    Ok(())
}
