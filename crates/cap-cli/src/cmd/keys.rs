//! `cap keygen`, `cap sign`, `cap verify`. The `legacy` signature profile (the default)
//! is handled here; `--profile production` (CAP-PRODUCTION) in [`super::prodsign`].

use super::{read_input, write_stdout};
use anyhow::{Context, Result, bail};
use cap_proto::{packet, v1};
use cap_sign::{KeyRing, PrivateKey, PublicKey, Verifier};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `cap keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// Directory for `ID.key.pem` (PKCS#8) and `ID.pem` (SubjectPublicKeyInfo).
    #[arg(long)]
    out: PathBuf,
    /// Key id, usually the sender id the key signs for.
    #[arg(long, default_value = "cap")]
    name: String,
}

/// The signature profile of `cap sign` / `cap verify`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// The packet signature of CAP v1 and cap-sdk-python 2.10.0: canonical bytes without
    /// field 14, the key chosen by sender id.
    #[default]
    Legacy,
    /// CAP-PRODUCTION: the exact wire bytes under a domain, bound to an audience, an
    /// expiry, a message id, a tenant and a sender; the key chosen by key id.
    Production,
}

/// Arguments of `cap sign`.
#[derive(Args)]
pub struct SignArgs {
    /// Signature profile.
    #[arg(long, value_enum, default_value_t = Profile::Legacy)]
    pub(crate) profile: Profile,
    /// Private key (PKCS#8 or SEC1 PEM).
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Set `created_at` to now before signing (re-encodes the packet).
    #[arg(long)]
    pub(crate) now: bool,
    /// Production: the key id receivers know the key by.
    #[arg(long, required_if_eq("profile", "production"))]
    pub(crate) key_id: Option<String>,
    /// Production: the subject the packet will be published on.
    #[arg(long, required_if_eq("profile", "production"))]
    pub(crate) audience: Option<String>,
    /// Production: seconds until the signature expires (1-300).
    #[arg(long, default_value_t = 300)]
    pub(crate) lifetime: u64,
    /// Production: the message id as 32 hex digits (default: fresh random). Reusing one
    /// makes receivers drop the packet as a replay: for fixtures only.
    #[arg(long)]
    pub(crate) message_id: Option<String>,
    /// Production: sign as of this instant (RFC 3339) instead of the clock (fixtures).
    #[arg(long)]
    pub(crate) issued_at: Option<String>,
    /// Binary BusPacket (`-` or nothing: stdin).
    pub(crate) input: Option<PathBuf>,
}

/// Arguments of `cap verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Signature profile.
    #[arg(long, value_enum, default_value_t = Profile::Legacy)]
    pub(crate) profile: Profile,
    /// Legacy: a trusted public key (SubjectPublicKeyInfo PEM) for any sender. Production:
    /// `ID=PEM`, a key and the key id packets name it by. Repeatable.
    #[arg(long = "key")]
    pub(crate) keys: Vec<String>,
    /// Legacy: directory of `<sender_id>.pem` public keys.
    #[arg(long)]
    pub(crate) trust: Option<PathBuf>,
    /// Production: the subject this receiver listens on (the packet's audience).
    #[arg(long, required_if_eq("profile", "production"))]
    pub(crate) audience: Option<String>,
    /// Production: check expiry and lifetime at this instant (RFC 3339) instead of the
    /// clock (fixtures, audits).
    #[arg(long)]
    pub(crate) now: Option<String>,
    /// Production: the tenant the packet must be bound to (`identity.tenant_id`).
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Production: the sender the packet must come from (`sender_id`).
    #[arg(long)]
    pub(crate) sender: Option<String>,
    /// Production: accept the tenant and sender the packet claims instead of
    /// `--tenant`/`--sender` (checks signature, key, audience and expiry only; says so).
    #[arg(long, conflicts_with_all = ["tenant", "sender"])]
    pub(crate) accept_packet_identity: bool,
    /// Production: clock skew tolerated, in seconds (0-60).
    #[arg(long, default_value_t = 0)]
    pub(crate) skew: u64,
    /// Binary BusPacket (`-` or nothing: stdin).
    pub(crate) input: Option<PathBuf>,
}

/// `cap keygen`.
pub fn keygen(a: KeygenArgs) -> Result<ExitCode> {
    if a.name.is_empty() || a.name.contains(['/', '\\']) || a.name.starts_with('.') {
        bail!("invalid key name `{}`", a.name);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let key = PrivateKey::generate();
    let private = a.out.join(format!("{}.key.pem", a.name));
    let public = a.out.join(format!("{}.pem", a.name));
    write_private(&private, key.to_pem()?.as_bytes())?;
    std::fs::write(&public, key.public_key().to_pem()?)
        .with_context(|| format!("writing {}", public.display()))?;
    println!("{}\n{}", private.display(), public.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `cap sign`.
pub fn sign(a: SignArgs) -> Result<ExitCode> {
    if a.profile == Profile::Legacy
        && let Some(flag) = super::prodsign::production_only_sign_flag(&a)
    {
        eprintln!("cap: {flag} needs --profile production");
        return Ok(ExitCode::from(2));
    }
    let pem =
        std::fs::read_to_string(&a.key).with_context(|| format!("reading {}", a.key.display()))?;
    let key = PrivateKey::from_pem(&pem).with_context(|| format!("{}", a.key.display()))?;
    if a.profile == Profile::Production {
        return super::prodsign::sign(&a, &key);
    }
    let mut raw = read_input(a.input.as_deref())?;
    if a.now {
        let mut pkt: v1::BusPacket = packet::decode(&raw, packet::DEFAULT_MAX_PACKET_BYTES)
            .context("input is not a valid BusPacket")?;
        pkt.created_at = Some(packet::timestamp(std::time::SystemTime::now()));
        raw = packet::encode(&pkt);
    } else {
        packet::decode(&raw, packet::DEFAULT_MAX_PACKET_BYTES)
            .context("input is not a valid BusPacket")?;
    }
    let signed = cap_sign::packet::sign_bytes(&raw, &key)?;
    write_stdout(&signed)?;
    Ok(ExitCode::SUCCESS)
}

/// `cap verify`: 0 valid; 1 invalid (reason on stderr); 2 input that is not a packet or an
/// unreadable key.
pub fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let usage = |msg: String| {
        eprintln!("cap: {msg}");
        Ok(ExitCode::from(2))
    };
    if a.profile == Profile::Production {
        return super::prodsign::verify(&a);
    }
    if let Some(flag) = super::prodsign::production_only_verify_flag(&a) {
        return usage(format!("{flag} needs --profile production"));
    }
    let mut any_sender = Vec::new();
    for path in &a.keys {
        let key = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| PublicKey::from_pem(&pem).map_err(|e| e.to_string()));
        match key {
            Ok(k) => any_sender.push(k),
            Err(e) => return usage(format!("{path}: {e}")),
        }
    }
    let ring = match &a.trust {
        Some(dir) => match KeyRing::load_dir(dir) {
            Ok(r) => r,
            Err(e) => return usage(e.to_string()),
        },
        None => KeyRing::new(),
    };
    if any_sender.is_empty() && ring.is_empty() {
        return usage("no key given: use --key PUB.pem or --trust DIR".into());
    }
    let raw = match read_input(a.input.as_deref()) {
        Ok(r) => r,
        Err(e) => return usage(format!("{e:#}")),
    };
    let pkt: v1::BusPacket = match prost::Message::decode(raw.as_slice()) {
        Ok(p) => p,
        Err(e) => return usage(format!("input is not a BusPacket: {e}")),
    };
    let sender = pkt.sender_id.clone();
    let result = cap_sign::packet::verify_decoded(
        &raw,
        &pkt,
        &KeysFor {
            sender: &sender,
            ring: &ring,
            any: &any_sender,
        },
    );
    match result {
        Ok(()) => {
            println!("valid: signed by `{sender}`");
            Ok(ExitCode::SUCCESS)
        }
        Err(cap_sign::Error::Decode(e)) => usage(format!("input is not a BusPacket: {e}")),
        Err(e) => {
            eprintln!("cap: invalid: {e} ({})", e.code());
            Ok(ExitCode::from(1))
        }
    }
}

/// The keys that may have signed for `sender`: its keys in the trust dir, plus every
/// `--key`.
struct KeysFor<'a> {
    sender: &'a str,
    ring: &'a KeyRing,
    any: &'a [PublicKey],
}

impl Verifier for KeysFor<'_> {
    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), cap_sign::Error> {
        if self.ring.contains(self.sender) {
            match self.ring.verify(self.sender, message, signature) {
                Ok(()) => return Ok(()),
                Err(e @ (cap_sign::Error::NotDer | cap_sign::Error::MalformedDer)) => {
                    return Err(e);
                }
                Err(_) => {}
            }
        } else if self.any.is_empty() {
            return Err(cap_sign::Error::UnknownSender {
                sender: self.sender.to_owned(),
            });
        }
        for key in self.any {
            match key.verify(message, signature) {
                Ok(()) => return Ok(()),
                Err(e @ (cap_sign::Error::NotDer | cap_sign::Error::MalformedDer)) => {
                    return Err(e);
                }
                Err(_) => {}
            }
        }
        Err(cap_sign::Error::Mismatch {
            sender: self.sender.to_owned(),
        })
    }
}
