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
        // Structural checks (payload present and known) with typed errors.
        packet::decode(&bytes, a.max_bytes).context("input is not a valid BusPacket")?;
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

/// `cap validate`: every violation with its field path; exit 1 when there is any.
pub fn validate(a: ValidateArgs) -> Result<ExitCode> {
    let bytes = read_input(a.input.as_deref())?;
    let pkt: v1::BusPacket = packet::decode(&bytes, packet::DEFAULT_MAX_PACKET_BYTES)
        .context("input is not a valid BusPacket")?;
    match cap_proto::validate::packet(&pkt) {
        Ok(()) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(violations) => {
            for v in &violations {
                println!("{}: {} ({})", v.field, v.message, v.code);
            }
            eprintln!("cap: {} violation(s)", violations.len());
            Ok(ExitCode::from(1))
        }
    }
}
