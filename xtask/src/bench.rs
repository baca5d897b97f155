//! Benchmarks (filled in below).
#[derive(clap::Subcommand)]
pub enum Which {}
pub fn run(which: Which) -> anyhow::Result<()> {
    match which {}
}
