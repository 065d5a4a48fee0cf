//! `cap decode`, `cap encode`, `cap schema`, `cap validate`.

use super::{read_input, write_stdout};
use anyhow::{Context, Result, anyhow, bail};
use cap_proto::{json, packet, resolve_message_name, v1};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `cap decode`.
#[derive(Args)]
pub struct DecodeArgs {
    /// Input file (`-` or nothing: stdin).
    input: Option<PathBuf>,
    /// One line instead of indented JSON.
    #[arg(long)]
    compact: bool,
    /// Message type of the input (short or full name).
    #[arg(long = "type", default_value = "BusPacket")]
    message: String,
    /// Largest input accepted, in bytes.
    #[arg(long, default_value_t = packet::DEFAULT_MAX_PACKET_BYTES)]
    max_bytes: usize,
}

/// Arguments of `cap encode`.
#[derive(Args)]
pub struct EncodeArgs {
    /// Input JSON file (`-` or nothing: stdin).
    input: Option<PathBuf>,
    /// Message type of the JSON (short or full name).
    #[arg(long = "type", default_value = "BusPacket")]
    message: String,
}

/// Arguments of `cap schema`.
#[derive(Args)]
pub struct SchemaArgs {
    /// Message (short or full name); all messages when omitted.
    message: Option<String>,
}

/// Arguments of `cap validate`.
#[derive(Args)]
pub struct ValidateArgs {
    /// Binary BusPacket file (`-` or nothing: stdin).
    input: Option<PathBuf>,
}

fn message_name(name: &str) -> Result<&'static str> {
    resolve_message_name(name).ok_or_else(|| anyhow!("unknown message type `{name}`"))
}

/// `cap decode`.
pub fn decode(a: DecodeArgs) -> Result<ExitCode> {
    let name = message_name(&a.message)?;
    let bytes = read_input(a.input.as_deref())?;
    if bytes.len() > a.max_bytes {
        bail!(
            "input of {} bytes exceeds the limit of {} bytes",
            bytes.len(),
            a.max_bytes
        );
    }
    if name == "cordum.agent.v1.BusPacket" {
        // Structural checks (payload present and known) with typed errors. Shown as a
        // plain parser reads it, even when the encoding is not strict (non-minimal
        // varints, several payloads): a receiver drops those, `cap validate` says why.
        packet::decode_lenient(&bytes, a.max_bytes).context("input is not a valid BusPacket")?;
        if let Err(e) = packet::decode(&bytes, a.max_bytes) {
            eprintln!("cap: note: {e}; receivers drop this packet (see `cap validate`)");
        }
    }
    let mut text = json::bytes_to_string(name, &bytes, !a.compact)
        .with_context(|| format!("input is not a valid {name}"))?;
    text.push('\n');
    write_stdout(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `cap encode`.
pub fn encode(a: EncodeArgs) -> Result<ExitCode> {
    let name = message_name(&a.message)?;
    let input = read_input(a.input.as_deref())?;
    let text = std::str::from_utf8(&input).context("input is not UTF-8")?;
    let bytes =
        json::str_to_bytes(name, text).with_context(|| format!("input is not {name} JSON"))?;
    write_stdout(&bytes)?;
    Ok(ExitCode::SUCCESS)
}

/// `cap schema`.
pub fn schema(a: SchemaArgs) -> Result<ExitCode> {
    let value = match a.message {
        Some(m) => cap_proto::schema::for_message(&m)
            .ok_or_else(|| anyhow!("unknown message type `{m}`"))?,
        None => cap_proto::schema::all(),
    };
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    write_stdout(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `cap validate`: what a receiver checks, every violation with its field path; exit 1
/// when there is any. A packet that is not strictly encoded (non-minimal varints,
/// several payloads) is reported as `encoding` (101) along with the rules its content
/// breaks; worker-trust packets are also checked for unknown fields.
pub fn validate(a: ValidateArgs) -> Result<ExitCode> {
    let bytes = read_input(a.input.as_deref())?;
    let limit = packet::DEFAULT_MAX_PACKET_BYTES;
    let pkt: v1::BusPacket =
        packet::decode_lenient(&bytes, limit).context("input is not a valid BusPacket")?;
    let mut lines = Vec::new();
    if let Err(e) = packet::decode(&bytes, limit) {
        lines.push(format!("encoding: {e} ({})", e.code()));
    }
    if let Err(violations) = cap_proto::validate::received(&bytes, &pkt) {
        for v in &violations {
            lines.push(format!("{}: {} ({})", v.field, v.message, v.code));
        }
    }
    if lines.is_empty() {
        println!("valid");
        return Ok(ExitCode::SUCCESS);
    }
    for l in &lines {
        println!("{l}");
    }
    eprintln!("cap: {} violation(s)", lines.len());
    Ok(ExitCode::from(1))
}
