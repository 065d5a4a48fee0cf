//! One module per command group.

pub mod bench;
pub mod bench_e2e;
pub mod codec;
pub mod demo;
pub mod gateway;
pub mod job;
pub mod keys;
pub mod observe;
pub mod prodsign;
pub mod safety;
pub mod scheduler;
pub mod submit;
pub mod tck;
pub mod telemetry;
pub mod worker;

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::path::Path;

/// Reads a file, or stdin for `-` or no path.
pub fn read_input(path: Option<&Path>) -> Result<Vec<u8>> {
    match path {
        Some(p) if p != Path::new("-") => {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        }
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            Ok(buf)
        }
    }
}

/// Writes bytes to stdout.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).context("writing stdout")?;
    out.flush().context("writing stdout")
}
