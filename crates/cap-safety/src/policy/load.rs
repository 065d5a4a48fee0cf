//! Reading policies: YAML or JSON text → [`PolicyFile`] → [`Policy`], with errors that
//! name the source, the path inside the document and what is wrong.

use super::compile::Policy;
use super::file::PolicyFile;
use crate::Error;
use crate::error::PolicyError;
use std::path::Path;

/// Largest policy accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 4 * 1024 * 1024;

/// The syntax of a policy document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (the usual form).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON when the first non-blank character is `{`, YAML otherwise.
    pub fn detect(text: &str) -> Format {
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Parses a policy document (no semantic checks; see [`Policy::compile`]).
pub fn parse(text: &str, format: Format, source: &str) -> Result<PolicyFile, Error> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(Error::policy_at(
            source,
            ".",
            format!(
                "policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                text.len()
            ),
        ));
    }
    if is_blank(text) {
        return Err(Error::policy_at(source, ".", "policy is empty"));
    }
    match format {
        Format::Yaml => {
            // serde-saphyr parses under a budget (nesting depth, nodes, events, aliases),
            // so hostile documents (Simulate's candidates come from the network) fail fast.
            let mut path = String::new();
            serde_saphyr::with_deserializer_from_str(text, |de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    path = e.path().to_string();
                    e.into_inner()
                })
            })
            .map_err(|e| {
                let location = e.location().map(|l| {
                    let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
                    (n(l.line()), n(l.column()))
                });
                let path = if path.is_empty() {
                    ".".to_owned()
                } else {
                    path
                };
                path_error(source, path, e.without_snippet().to_string(), location)
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let file: PolicyFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let location = Some((e.inner().line(), e.inner().column()));
                path_error(
                    source,
                    e.path().to_string(),
                    e.inner().to_string(),
                    location,
                )
            })?;
            de.end().map_err(|e| {
                path_error(
                    source,
                    ".".into(),
                    e.to_string(),
                    Some((e.line(), e.column())),
                )
            })?;
            Ok(file)
        }
    }
}

/// Nothing but whitespace, YAML comments and document markers: an empty (probably
/// truncated) file, rejected rather than read as "no rules".
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

fn path_error(
    source: &str,
    path: String,
    message: String,
    location: Option<(usize, usize)>,
) -> Error {
    // The parsers append their own position ("at line 3 column 5"); it is kept separately.
    let message = match message.find(" at line ") {
        Some(i) if location.is_some() => message[..i].to_owned(),
        _ => message,
    };
    Error::from(PolicyError {
        source: source.to_owned(),
        path,
        message,
        location,
    })
}

impl Policy {
    /// Parses and compiles a policy from YAML or JSON text (detected).
    pub fn from_text(text: &str, source: &str) -> Result<Policy, Error> {
        Policy::compile(parse(text, Format::detect(text), source)?, source)
    }

    /// Parses and compiles a policy from bytes that must be UTF-8 YAML or JSON.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Policy, Error> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::policy_at(source, ".", format!("policy is not UTF-8: {e}")))?;
        Policy::from_text(text, source)
    }

    /// Reads, parses and compiles a policy file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Policy, Error> {
        let path = path.as_ref();
        let bytes = read_policy_file(path)?;
        Policy::from_bytes(&bytes, &path.display().to_string())
    }
}

/// Reads a policy file, refusing files over [`MAX_POLICY_BYTES`].
pub(crate) fn read_policy_file(path: &Path) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_POLICY_BYTES as u64 {
        return Err(Error::policy_at(
            &path.display().to_string(),
            ".",
            format!(
                "policy file is {} bytes; the limit is {MAX_POLICY_BYTES}",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(io)
}

/// The JSON Schema (draft 2020-12) of policy files.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PolicyFile);
    serde_json::to_value(schema).unwrap_or_default()
}
