//! [`WorkerKeys`]: the registry of worker proof keys, by `proof_key_id`, each bound to
//! the worker, agent and tenant a challenge for it carries.

use super::error::{Error, ErrorKind};
use cap_proto::trust::is_canonical_text;
use cap_sign::PublicKey;
use std::collections::HashMap;
use std::path::Path;

/// The tenant of a key without a binding file.
pub const DEFAULT_TENANT: &str = "default";

/// One registered proof key and the identities bound to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerKey {
    /// The key's id (`proof_key_id` in challenge requests).
    pub proof_key_id: String,
    /// The worker id (sender id) that may use it.
    pub worker_id: String,
    /// The agent id a challenge for it carries.
    pub agent_id: String,
    /// The tenant a challenge for it carries.
    pub tenant_id: String,
    /// The public key.
    pub key: PublicKey,
}

impl WorkerKey {
    /// A key whose worker id and agent id are its id, in tenant `default`.
    pub fn new(proof_key_id: impl Into<String>, key: PublicKey) -> Self {
        let id = proof_key_id.into();
        WorkerKey {
            worker_id: id.clone(),
            agent_id: id.clone(),
            proof_key_id: id,
            tenant_id: DEFAULT_TENANT.to_owned(),
            key,
        }
    }

    /// Binds the key to `worker_id` (the agent id follows unless set after).
    pub fn worker(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = worker_id.into();
        self.agent_id = self.worker_id.clone();
        self
    }

    /// Sets the agent id.
    pub fn agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = agent_id.into();
        self
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = tenant_id.into();
        self
    }
}

/// The optional `<proof_key_id>.json` beside a key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Binding {
    worker_id: Option<String>,
    agent_id: Option<String>,
    tenant_id: Option<String>,
}

/// Registered worker proof keys by id.
///
/// ```
/// use cap_scheduler::trust::{WorkerKey, WorkerKeys};
/// use cap_sign::PrivateKey;
///
/// let mut keys = WorkerKeys::new();
/// keys.insert(WorkerKey::new("k-1", PrivateKey::generate().public_key()).worker("w-1")).unwrap();
/// assert_eq!(keys.get("k-1").unwrap().agent_id, "w-1");
/// assert!(keys.insert(WorkerKey::new("bad id", PrivateKey::generate().public_key())).is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct WorkerKeys {
    keys: HashMap<String, WorkerKey>,
}

impl WorkerKeys {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) a key; every identity must be canonical text.
    pub fn insert(&mut self, key: WorkerKey) -> Result<(), Error> {
        let ids = [
            &key.proof_key_id,
            &key.worker_id,
            &key.agent_id,
            &key.tenant_id,
        ];
        if !ids.iter().all(|v| is_canonical_text(v)) {
            return Err(Error::new(
                ErrorKind::Keys,
                "key ids and identities must be printable ASCII without spaces, 1-256 bytes",
            ));
        }
        self.keys.insert(key.proof_key_id.clone(), key);
        Ok(())
    }

    /// The key `proof_key_id`.
    pub fn get(&self, proof_key_id: &str) -> Option<&WorkerKey> {
        self.keys.get(proof_key_id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Loads a directory: every `<proof_key_id>.pem` (SubjectPublicKeyInfo; files ending
    /// in `.key.pem` are private keys and are skipped), each with an optional
    /// `<proof_key_id>.json` `{"worker_id", "agent_id", "tenant_id"}` (every field
    /// optional, no others). Without one, worker id = agent id = the key id and the
    /// tenant is `default`; with only `worker_id`, the agent id follows it.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let io = |what: &str, e: std::io::Error| {
            Error::new(ErrorKind::Keys, format!("{what} {}: {e}", dir.display()))
        };
        let mut keys = WorkerKeys::new();
        let mut bindings = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("reading", e))? {
            let path = entry.map_err(|e| io("reading", e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(id) = name.strip_suffix(".json") {
                bindings.push(id.to_owned());
                continue;
            }
            let Some(id) = name.strip_suffix(".pem") else {
                continue;
            };
            if name.ends_with(".key.pem") {
                continue;
            }
            let fail = |detail: String| {
                Error::new(ErrorKind::Keys, format!("{}: {detail}", path.display()))
            };
            let pem = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
            let public = PublicKey::from_pem(&pem).map_err(|e| fail(e.to_string()))?;
            let mut key = WorkerKey::new(id, public);
            let json = dir.join(format!("{id}.json"));
            if json.exists() {
                let text = std::fs::read_to_string(&json).map_err(|e| fail(e.to_string()))?;
                let b: Binding = serde_json::from_str(&text)
                    .map_err(|e| fail(format!("{}: {e}", json.display())))?;
                if let Some(w) = b.worker_id {
                    key = key.worker(w);
                }
                if let Some(a) = b.agent_id {
                    key = key.agent(a);
                }
                if let Some(t) = b.tenant_id {
                    key = key.tenant(t);
                }
            }
            keys.insert(key).map_err(|e| fail(e.to_string()))?;
        }
        if let Some(orphan) = bindings.iter().find(|id| keys.get(id).is_none()) {
            return Err(Error::new(
                ErrorKind::Keys,
                format!("{orphan}.json has no {orphan}.pem in {}", dir.display()),
            ));
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_sign::PrivateKey;

    #[test]
    fn directory_with_and_without_bindings() {
        let dir = std::env::temp_dir().join(format!("cap-trust-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        std::fs::write(dir.join("plain.pem"), a.public_key().to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("plain.key.pem"), a.to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("bound.pem"), b.public_key().to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.join("bound.json"),
            r#"{"worker_id": "w-9", "tenant_id": "acme"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let keys = WorkerKeys::load_dir(&dir).unwrap();
        assert_eq!(keys.len(), 2);
        let plain = keys.get("plain").unwrap();
        assert_eq!(
            (
                plain.worker_id.as_str(),
                plain.agent_id.as_str(),
                plain.tenant_id.as_str()
            ),
            ("plain", "plain", "default")
        );
        assert_eq!(plain.key, a.public_key());
        let bound = keys.get("bound").unwrap();
        assert_eq!(
            (
                bound.worker_id.as_str(),
                bound.agent_id.as_str(),
                bound.tenant_id.as_str()
            ),
            ("w-9", "w-9", "acme")
        );

        std::fs::write(dir.join("bound.json"), r#"{"worker_id": "w", "role": "x"}"#).unwrap();
        assert_eq!(
            WorkerKeys::load_dir(&dir).unwrap_err().kind(),
            ErrorKind::Keys
        );
        std::fs::write(dir.join("bound.json"), r#"{"worker_id": "has space"}"#).unwrap();
        assert!(WorkerKeys::load_dir(&dir).is_err());
        std::fs::remove_file(dir.join("bound.json")).unwrap();
        std::fs::write(dir.join("orphan.json"), "{}").unwrap();
        assert!(WorkerKeys::load_dir(&dir).is_err());
        std::fs::remove_file(dir.join("orphan.json")).unwrap();
        std::fs::write(dir.join("broken.pem"), "not a key").unwrap();
        assert!(WorkerKeys::load_dir(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(WorkerKeys::load_dir(&dir).is_err());
    }
}
