//! Development aid: writes generated networks of the design space as ONNX files, for checking a
//! profile on networks its calibration never saw (another seed than the calibration's gives other
//! widths, kernels and resolutions of the same families).
//!
//! Usage: write_nets SEED FIRST COUNT DIR
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seed, first, count, dir] = args.as_slice() else {
        return Err("usage: write_nets SEED FIRST COUNT DIR".into());
    };
    let (seed, first, count): (u64, usize, usize) = (seed.parse()?, first.parse()?, count.parse()?);
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    for i in first..first + count {
        let g = augur::model::families::network(seed, i)?;
        let path = dir.join(format!("{}.onnx", g.name));
        std::fs::write(&path, augur::model::export::to_onnx_bytes(&g)?)?;
        println!("{}", path.display());
    }
    Ok(())
}
