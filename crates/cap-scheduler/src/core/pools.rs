//! [`Pools`]: which pool subject serves a topic, and what its workers must be able to do.
//!
//! ```yaml
//! topics:
//!   job.echo: echo          # exact topic
//!   job.code.*: code        # shell glob
//! pools:
//!   code:
//!     requires: [gpu]
//! ```
//! Without a pools file (or for a topic it does not name) a job's topic is its pool
//! subject: `job.echo` jobs go to `job.echo`.

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Why a pools file is rejected.
#[derive(Debug, thiserror::Error)]
#[error("pools file: {0}")]
pub struct PoolsError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolsFile {
    #[serde(default)]
    topics: BTreeMap<String, String>,
    #[serde(default)]
    pools: BTreeMap<String, PoolSpec>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct PoolSpec {
    #[serde(default)]
    requires: Vec<String>,
    /// Dispatched but not started after this long: TIMEOUT.
    #[serde(default)]
    dispatch_timeout_ms: Option<u64>,
    /// Running without a result after this long: TIMEOUT.
    #[serde(default)]
    run_timeout_ms: Option<u64>,
}

/// The compiled topic → pool map.
#[derive(Clone, Default)]
pub struct Pools {
    exact: BTreeMap<String, String>,
    globs: Vec<(GlobMatcher, String)>,
    requires: BTreeMap<String, Vec<String>>,
    timeouts: BTreeMap<String, (Option<u64>, Option<u64>)>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("exact", &self.exact)
            .field("globs", &self.globs.len())
            .finish()
    }
}

/// Where a topic goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The pool name (`echo`); empty when the topic itself is the subject.
    pub pool: String,
    /// The subject to dispatch to (`job.<pool>`, or the topic).
    pub subject: String,
    /// Capabilities the pool's workers must have.
    pub requires: Vec<String>,
}

impl Pools {
    /// Parses a YAML pools file.
    pub fn from_yaml(text: &str) -> Result<Self, PoolsError> {
        let file: PoolsFile = yaml_serde::from_str(text).map_err(|e| PoolsError(e.to_string()))?;
        let mut pools = Pools::default();
        for (topic, pool) in file.topics {
            cap_proto::subject::pool(&pool)
                .map_err(|e| PoolsError(format!("pool `{pool}`: {e}")))?;
            if topic.contains(['*', '?', '[']) {
                let glob =
                    Glob::new(&topic).map_err(|e| PoolsError(format!("topic `{topic}`: {e}")))?;
                pools.globs.push((glob.compile_matcher(), pool));
            } else {
                pools.exact.insert(topic, pool);
            }
        }
        for (name, spec) in file.pools {
            pools.timeouts.insert(
                name.clone(),
                (spec.dispatch_timeout_ms, spec.run_timeout_ms),
            );
            pools.requires.insert(name, spec.requires);
        }
        Ok(pools)
    }

    /// The dispatch timeout of the pool serving `topic`, when its pool sets one.
    pub fn dispatch_timeout(&self, topic: &str) -> Option<std::time::Duration> {
        let pool = self.route(topic).pool;
        self.timeouts
            .get(&pool)
            .and_then(|t| t.0)
            .map(std::time::Duration::from_millis)
    }

    /// The run timeout of the pool serving `topic`, when its pool sets one.
    pub fn run_timeout(&self, topic: &str) -> Option<std::time::Duration> {
        let pool = self.route(topic).pool;
        self.timeouts
            .get(&pool)
            .and_then(|t| t.1)
            .map(std::time::Duration::from_millis)
    }

    /// The route of a topic.
    pub fn route(&self, topic: &str) -> Route {
        let pool = self.exact.get(topic).cloned().or_else(|| {
            self.globs
                .iter()
                .find(|(g, _)| g.is_match(topic))
                .map(|(_, p)| p.clone())
        });
        match pool {
            Some(pool) => Route {
                subject: cap_proto::subject::pool(&pool)
                    .map(|s| s.into_string())
                    .unwrap_or_else(|_| topic.to_owned()),
                requires: self.requires.get(&pool).cloned().unwrap_or_default(),
                pool,
            },
            None => Route {
                pool: String::new(),
                subject: topic.to_owned(),
                requires: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = Pools::from_yaml(
            "topics:\n  job.echo: echo\n  job.code.*: code\npools:\n  code:\n    requires: [gpu]\n",
        )
        .unwrap();
        assert_eq!(
            p.route("job.echo"),
            Route {
                pool: "echo".into(),
                subject: "job.echo".into(),
                requires: vec![]
            }
        );
        assert_eq!(
            p.route("job.code.review"),
            Route {
                pool: "code".into(),
                subject: "job.code".into(),
                requires: vec!["gpu".into()]
            }
        );
        assert_eq!(p.route("job.other").subject, "job.other");
        let t = Pools::from_yaml("topics:\n  job.a: a\npools:\n  a:\n    run_timeout_ms: 50\n")
            .unwrap();
        assert_eq!(
            t.run_timeout("job.a"),
            Some(std::time::Duration::from_millis(50))
        );
        assert_eq!(t.dispatch_timeout("job.a"), None);
        assert_eq!(t.run_timeout("job.b"), None);
        assert_eq!(Pools::default().route("job.x").subject, "job.x");
    }

    #[test]
    fn bad_files() {
        assert!(Pools::from_yaml("topics:\n  job.x: 'bad pool'\n").is_err());
        assert!(Pools::from_yaml("topicz: {}\n").is_err());
        assert!(Pools::from_yaml("pools:\n  a:\n    requires: [x]\n    extra: 1\n").is_err());
    }
}
