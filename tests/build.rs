//! Compiles the vendored CRI definitions (`proto/cri-api/api.proto`) into a
//! tonic client for the container test, after dropping the `gogoproto`
//! import and options (Go generator hints; nothing on the wire changes).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = PathBuf::from("proto/cri-api/api.proto");
    println!("cargo:rerun-if-changed={}", source.display());
    let text = std::fs::read_to_string(&source)?;
    let cleaned: String = text
        .lines()
        .filter(|line| !line.contains("gogoproto"))
        .map(|line| format!("{line}\n"))
        .collect();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("cri-proto");
    std::fs::create_dir_all(&out)?;
    let cleaned_path = out.join("api.proto");
    std::fs::write(&cleaned_path, cleaned)?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&[&cleaned_path], &[&out])
        .map_err(|err| {
            format!("compiling the CRI protobuf definitions (protoc is Debian's protobuf-compiler, installed by `cargo xtask test`): {err}")
        })?;
    Ok(())
}
