//! [`RedisJobStore`]: the job store on Redis or Redis Cluster.
//!
//! # Layout
//! Every key of one job lives on one cluster slot: keys carry a hash tag naming one of
//! [`BUCKETS`] buckets, chosen by a hash of the job id, so a job's record and its entry
//! in its bucket's deadline set change together in one script.
//!
//! - `<prefix>{b<N>}:job:<id>` — hash `v` (version), `r` (the record as JSON); expires
//!   after the retention once the job is finished.
//! - `<prefix>{b<N>}:due` — sorted set of the bucket's job ids by next deadline (ms).
//! - `<prefix>{b<N>}:kids:<parent>` — set of a workflow parent's children (parent's bucket).
//! - `<prefix>{b<N>}:rcpt:<id>` — where the durable bus stored the job's dispatch.
//! - `<prefix>{k<N>}:idem:<key>` — the job holding an idempotency key (bucket of the key).
//! - `<prefix>{t<N>}:tenant:<tenant>` — sorted set of a tenant's job ids by creation
//!   time (ms), added when a job's record is created; ids whose record expired are
//!   dropped when a listing meets them.
//! - `<prefix>{workers}:seen`, `<prefix>{workers}:info` — workers' handshakes, shared.
//!
//! Every change of a record is one script: compare the version, write the record, set
//! or drop the deadline and the expiry. Deadlines are claimed by a script that leases
//! them, so exactly one instance acts on a due job.

use super::store::{Commit, Committed, JobStore, StoreError, Stored, WorkerEntry};
use crate::core::{JobRecord, Millis};
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, Value};
use std::time::Duration;

/// Buckets (cluster hash tags) the jobs are spread over.
pub const BUCKETS: u64 = 64;

/// Compare-and-set of one record and its deadline.
/// KEYS: job, due. ARGV: expected version, record, job id, deadline ('' = none),
/// ttl ms ('' = keep).
const COMMIT: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
v = v + 1
redis.call('HSET', KEYS[1], 'v', v, 'r', ARGV[2])
if ARGV[5] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[5]) else redis.call('PERSIST', KEYS[1]) end
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) else redis.call('ZREM', KEYS[2], ARGV[3]) end
return v
";

/// Lease the due entries of one bucket. KEYS: due. ARGV: now, lease until, max.
const CLAIM: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
";

/// Re-arm the deadline of an unchanged job. KEYS: job, due. ARGV: version, id, deadline.
const REARM: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
if v == 0 or ARGV[3] == '' then redis.call('ZREM', KEYS[2], ARGV[2]) else redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2]) end
return 1
";

/// Take a receipt if it is for the given dispatch. KEYS: receipt. ARGV: dispatch id.
const TAKE_RECEIPT: &str = r"
local r = redis.call('GET', KEYS[1])
if not r then return false end
local sp = string.find(r, ' ', 1, true)
if not sp or string.sub(r, 1, sp - 1) ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return string.sub(r, sp + 1)
";

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn eval(script: &str, keys: &[&str], args: &[&[u8]]) -> Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(keys.len()).arg(keys);
    for a in args {
        c.arg(*a);
    }
    c
}

fn opt_ms(v: Option<u64>) -> Vec<u8> {
    v.map(|x| x.to_string().into_bytes()).unwrap_or_default()
}

/// Job records in Redis (or Redis Cluster). A job's keys share one cluster slot (the
/// hash tag of one of [`BUCKETS`] buckets), so its record, version and deadline change
/// together in one compare-and-set script.
/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisJobStore<C = cap_blob::RedisConnection> {
    conn: C,
    prefix: String,
    /// Whether commands for different buckets must go in separate pipelines.
    cluster: bool,
}

impl<C> std::fmt::Debug for RedisJobStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobStore")
            .field("prefix", &self.prefix)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Longest wait for Redis to answer at start-up (connect and `PING`).
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisJobStore<cap_blob::RedisConnection> {
    /// Connects (and pings) Redis at `url` — one server, or a Redis Cluster given as
    /// several comma-separated node URLs — with keys starting with `prefix` (e.g.
    /// `cap:sched:`). Fails fast: an unreachable or silent server is an error within
    /// [`REDIS_CONNECT_TIMEOUT`], naming the URL without its password. Once connected,
    /// the connection is re-established by itself when Redis goes away and comes back.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, StoreError> {
        Self::open(&cap_blob::RedisConfig::new(url), prefix).await
    }

    /// Connects with full settings (TLS, cluster, timeouts: see
    /// [`cap_blob::RedisConfig`]).
    pub async fn open(
        config: &cap_blob::RedisConfig,
        prefix: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let mut config = config.clone();
        config.connect_timeout = config.connect_timeout.min(REDIS_CONNECT_TIMEOUT);
        let conn = cap_blob::RedisConnection::open(&config)
            .await
            .map_err(|e| match e {
                cap_blob::Error::Unavailable {
                    location, source, ..
                } => StoreError(format!(
                    "cannot reach Redis at {location} (job store, {} s timeout): {source}",
                    REDIS_CONNECT_TIMEOUT.as_secs()
                )),
                other => StoreError(format!("job store: {other}")),
            })?;
        let cluster = conn.is_cluster();
        Ok(Self::with_connection(conn, prefix, cluster))
    }
}

impl<C> RedisJobStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store over an existing connection. `cluster`: the connection is to a Redis
    /// Cluster (commands for different slots are sent separately).
    pub fn with_connection(conn: C, prefix: impl Into<String>, cluster: bool) -> Self {
        RedisJobStore {
            conn,
            prefix: prefix.into(),
            cluster,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn bucket(&self, id: &str) -> u64 {
        fnv(id) % BUCKETS
    }

    fn job_key(&self, id: &str) -> String {
        format!("{}{{b{}}}:job:{id}", self.prefix, self.bucket(id))
    }

    fn due_key_of(&self, bucket: u64) -> String {
        format!("{}{{b{bucket}}}:due", self.prefix)
    }

    fn due_key(&self, id: &str) -> String {
        self.due_key_of(self.bucket(id))
    }

    fn kids_key(&self, parent: &str) -> String {
        format!("{}{{b{}}}:kids:{parent}", self.prefix, self.bucket(parent))
    }

    fn receipt_key(&self, id: &str) -> String {
        format!("{}{{b{}}}:rcpt:{id}", self.prefix, self.bucket(id))
    }

    fn idem_key(&self, key: &str) -> String {
        format!("{}{{k{}}}:idem:{key}", self.prefix, fnv(key) % BUCKETS)
    }

    fn tenant_key(&self, tenant: &str) -> String {
        format!(
            "{}{{t{}}}:tenant:{tenant}",
            self.prefix,
            fnv(tenant) % BUCKETS
        )
    }

    fn workers_key(&self, what: &str) -> String {
        format!("{}{{workers}}:{what}", self.prefix)
    }

    /// Runs `cmds` (each tagged with its bucket) and returns their replies in order: one
    /// pipeline on a single Redis; one pipeline per bucket, concurrently, on a cluster.
    async fn run(&self, cmds: Vec<(u64, Cmd)>) -> Result<Vec<Value>, StoreError> {
        self.run_each(cmds).await.into_iter().collect()
    }

    /// Like [`run`](Self::run), with one outcome per command: on a cluster some commands
    /// may succeed while others fail (a node in failover); in one pipeline, a failure
    /// leaves every outcome unknown.
    async fn run_each(&self, cmds: Vec<(u64, Cmd)>) -> Vec<Result<Value, StoreError>> {
        if cmds.is_empty() {
            return Vec::new();
        }
        if !self.cluster {
            let n = cmds.len();
            let mut pipe = Pipeline::with_capacity(n);
            for (_, c) in &cmds {
                pipe.add_command(c.clone());
            }
            let mut conn = self.conn.clone();
            return match pipe.query_async::<Vec<Value>>(&mut conn).await {
                Ok(values) => values.into_iter().map(Ok).collect(),
                Err(e) => {
                    let e = e.to_string();
                    (0..n).map(|_| Err(StoreError(e.clone()))).collect()
                }
            };
        }
        // On a cluster, each command on its own (concurrently): a single command is
        // routed by its key's slot and follows the cluster through failovers (MOVED,
        // refreshed topology), which a pipeline pinned to one node does not.
        let calls = cmds.into_iter().map(|(_, c)| {
            let mut conn = self.conn.clone();
            async move { c.query_async::<Value>(&mut conn).await.map_err(err) }
        });
        futures_util::future::join_all(calls).await
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn as_strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().filter_map(as_string).collect(),
        _ => Vec::new(),
    }
}

impl<C> JobStore for RedisJobStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn load(&self, ids: &[String]) -> Result<Vec<Option<Stored>>, StoreError> {
        let cmds = ids
            .iter()
            .map(|id| {
                let mut c = redis::cmd("HMGET");
                c.arg(self.job_key(id)).arg("v").arg("r");
                (self.bucket(id), c)
            })
            .collect();
        let replies = self.run(cmds).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, reply) in ids.iter().zip(&replies) {
            let Value::Array(fields) = reply else {
                out.push(None);
                continue;
            };
            let version = fields.first().and_then(as_u64).unwrap_or(0);
            let text = fields.get(1).and_then(as_string);
            match (version, text) {
                (v, Some(t)) if v > 0 => match serde_json::from_str::<JobRecord>(&t) {
                    Ok(record) => out.push(Some(Stored { version: v, record })),
                    Err(e) => {
                        // Unreadable: treat as absent but say so (a newer format, damage).
                        tracing::warn!(job_id = %id, error = %e, "unreadable job record");
                        out.push(None);
                    }
                },
                _ => out.push(None),
            }
        }
        Ok(out)
    }

    async fn commit(&self, commits: &[Commit<'_>]) -> Result<Vec<Committed>, StoreError> {
        let mut cmds = Vec::with_capacity(commits.len());
        for c in commits {
            let id = c.record.id();
            let text = serde_json::to_string(c.record).map_err(err)?;
            let ttl = c.ttl.map(|t| crate::core::timers::ms(t).max(1));
            let cmd = eval(
                COMMIT,
                &[&self.job_key(id), &self.due_key(id)],
                &[
                    c.expected.to_string().as_bytes(),
                    text.as_bytes(),
                    id.as_bytes(),
                    &opt_ms(c.deadline),
                    &opt_ms(ttl),
                ],
            );
            cmds.push((self.bucket(id), cmd));
        }
        let replies = self.run_each(cmds).await;
        let out: Vec<Committed> = replies
            .iter()
            .map(|r| match r {
                Ok(r) => match as_i64(r) {
                    Some(v) if v > 0 => Committed::Yes(v as u64),
                    _ => Committed::Conflict,
                },
                // Sent but not answered: it may have been applied.
                Err(_) => Committed::Unknown,
            })
            .collect();
        // New records join their tenant's index (another slot: a command of its own).
        let index: Vec<(u64, Cmd)> = commits
            .iter()
            .zip(&out)
            .filter(|(c, o)| c.expected == 0 && matches!(o, Committed::Yes(_)))
            .map(|(c, _)| {
                let mut z = redis::cmd("ZADD");
                z.arg(self.tenant_key(c.record.tenant()))
                    .arg(c.record.created())
                    .arg(c.record.id());
                (0, z)
            })
            .collect();
        for r in self.run_each(index).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "adding a job to its tenant's index failed");
            }
        }
        Ok(out)
    }

    async fn tenant_jobs(
        &self,
        tenant: &str,
        before: Option<(Millis, String)>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let key = self.tenant_key(tenant);
        let max = before
            .as_ref()
            .map(|(c, _)| c.to_string())
            .unwrap_or_else(|| "+inf".into());
        let mut out: Vec<JobRecord> = Vec::new();
        let mut offset = 0usize;
        let batch = (limit + 16).min(1000);
        while out.len() < limit {
            let mut cmd = redis::cmd("ZREVRANGEBYSCORE");
            cmd.arg(&key)
                .arg(&max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(offset)
                .arg(batch);
            let reply = self.run(vec![(0, cmd)]).await?;
            let flat = reply.first().map(as_strings).unwrap_or_default();
            if flat.is_empty() {
                break;
            }
            offset += flat.len() / 2;
            let mut ids = Vec::new();
            let mut created = Vec::new();
            for pair in flat.chunks(2) {
                let (Some(id), Some(score)) = (pair.first(), pair.get(1)) else {
                    continue;
                };
                let score: Millis = score.parse::<f64>().map(|f| f as Millis).unwrap_or(0);
                if let Some((c, cid)) = &before
                    && score == *c
                    && id.as_str() >= cid.as_str()
                {
                    continue;
                }
                ids.push(id.clone());
                created.push(score);
            }
            let records = self.load(&ids).await?;
            let mut stale = Vec::new();
            for ((id, c), r) in ids.iter().zip(created).zip(records) {
                match r {
                    Some(s) if s.record.created() == c => {
                        if out.len() < limit {
                            out.push(s.record);
                        }
                    }
                    _ => stale.push(id.clone()),
                }
            }
            if !stale.is_empty() {
                let mut z = redis::cmd("ZREM");
                z.arg(&key).arg(&stale);
                self.run(vec![(0, z)]).await?;
                offset = offset.saturating_sub(stale.len());
            }
            if flat.len() / 2 < batch {
                break;
            }
        }
        Ok(out)
    }

    async fn claim_due(
        &self,
        now: Millis,
        lease_until: Millis,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        // Each bucket in turn from a rotating start, so no bucket starves.
        let per_bucket = max.div_ceil(BUCKETS as usize).max(1);
        let cmds = (0..BUCKETS)
            .map(|b| {
                (
                    b,
                    eval(
                        CLAIM,
                        &[&self.due_key_of(b)],
                        &[
                            now.to_string().as_bytes(),
                            lease_until.to_string().as_bytes(),
                            per_bucket.to_string().as_bytes(),
                        ],
                    ),
                )
            })
            .collect();
        let replies = self.run(cmds).await?;
        Ok(replies.iter().flat_map(as_strings).collect())
    }

    async fn rearm(
        &self,
        id: &str,
        version: u64,
        deadline: Option<Millis>,
    ) -> Result<(), StoreError> {
        let cmd = eval(
            REARM,
            &[&self.job_key(id), &self.due_key(id)],
            &[
                version.to_string().as_bytes(),
                id.as_bytes(),
                &opt_ms(deadline),
            ],
        );
        self.run(vec![(self.bucket(id), cmd)]).await.map(|_| ())
    }

    async fn claim_key(
        &self,
        key: &str,
        job_id: &str,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let k = self.idem_key(key);
        let bucket = fnv(key) % BUCKETS;
        let mut set = redis::cmd("SET");
        set.arg(&k)
            .arg(job_id)
            .arg("NX")
            .arg("PX")
            .arg(crate::core::timers::ms(ttl).max(1));
        let mut get = redis::cmd("GET");
        get.arg(&k);
        let replies = self.run(vec![(bucket, set), (bucket, get)]).await?;
        Ok(replies
            .get(1)
            .and_then(as_string)
            .unwrap_or_else(|| job_id.to_owned()))
    }

    async fn link_child(&self, parent: &str, child: &str, ttl: Duration) -> Result<(), StoreError> {
        let k = self.kids_key(parent);
        let mut add = redis::cmd("SADD");
        add.arg(&k).arg(child);
        let mut exp = redis::cmd("PEXPIRE");
        exp.arg(&k).arg(crate::core::timers::ms(ttl).max(1));
        let b = self.bucket(parent);
        self.run(vec![(b, add), (b, exp)]).await.map(|_| ())
    }

    async fn children(&self, parent: &str) -> Result<Vec<String>, StoreError> {
        let mut c = redis::cmd("SMEMBERS");
        c.arg(self.kids_key(parent));
        let replies = self.run(vec![(self.bucket(parent), c)]).await?;
        let mut kids: Vec<String> = replies.first().map(as_strings).unwrap_or_default();
        kids.sort();
        Ok(kids)
    }

    async fn put_worker(&self, worker: &WorkerEntry, ttl: Duration) -> Result<(), StoreError> {
        let text = serde_json::to_string(&WorkerJson::from(worker)).map_err(err)?;
        let until = crate::shell::now_ms().saturating_add(crate::core::timers::ms(ttl));
        let mut seen = redis::cmd("ZADD");
        seen.arg(self.workers_key("seen"))
            .arg(until)
            .arg(&worker.worker_id);
        let mut info = redis::cmd("HSET");
        info.arg(self.workers_key("info"))
            .arg(&worker.worker_id)
            .arg(text);
        let b = BUCKETS; // any tag: both keys share `{workers}`
        self.run(vec![(b, seen), (b, info)]).await.map(|_| ())
    }

    async fn workers(&self) -> Result<Vec<WorkerEntry>, StoreError> {
        let now = crate::shell::now_ms();
        let b = BUCKETS;
        let mut prune = redis::cmd("ZREMRANGEBYSCORE");
        prune.arg(self.workers_key("seen")).arg("-inf").arg(now);
        let mut live = redis::cmd("ZRANGE");
        live.arg(self.workers_key("seen")).arg(0).arg(-1);
        let replies = self.run(vec![(b, prune), (b, live)]).await?;
        let ids = replies.get(1).map(as_strings).unwrap_or_default();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut get = redis::cmd("HMGET");
        get.arg(self.workers_key("info")).arg(&ids);
        let replies = self.run(vec![(b, get)]).await?;
        let Some(Value::Array(texts)) = replies.first() else {
            return Ok(Vec::new());
        };
        Ok(texts
            .iter()
            .filter_map(as_string)
            .filter_map(|t| serde_json::from_str::<WorkerJson>(&t).ok())
            .map(WorkerEntry::from)
            .collect())
    }

    async fn put_receipt(
        &self,
        job_id: &str,
        dispatch_id: &str,
        receipt: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = redis::cmd("SET");
        c.arg(self.receipt_key(job_id))
            .arg(format!("{dispatch_id} {receipt}"))
            .arg("PX")
            .arg(crate::core::timers::ms(ttl).max(1));
        self.run(vec![(self.bucket(job_id), c)]).await.map(|_| ())
    }

    async fn take_receipt(
        &self,
        job_id: &str,
        dispatch_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let cmd = eval(
            TAKE_RECEIPT,
            &[&self.receipt_key(job_id)],
            &[dispatch_id.as_bytes()],
        );
        let replies = self.run(vec![(self.bucket(job_id), cmd)]).await?;
        Ok(replies.first().and_then(as_string))
    }

    async fn durability_warning(&self) -> Option<String> {
        let get = |what: &str| {
            let mut c = redis::cmd("CONFIG");
            c.arg("GET").arg(what);
            (0, c)
        };
        let replies = self.run_each(vec![get("save"), get("appendonly")]).await;
        let value = |r: &Result<Value, StoreError>| match r {
            Ok(Value::Array(kv)) => kv.get(1).and_then(as_string),
            Ok(Value::Map(kv)) => kv.first().and_then(|(_, v)| as_string(v)),
            _ => None,
        };
        match (
            replies.first().and_then(value),
            replies.get(1).and_then(value),
        ) {
            (Some(save), Some(aof)) if save.trim().is_empty() && aof != "yes" => Some(
                "Redis persists nothing (no snapshots, no append-only file): a Redis restart \
                 loses every job in flight; turn on `appendonly yes` (or snapshots)"
                    .to_owned(),
            ),
            // CONFIG may be disabled (managed services): nothing to say.
            _ => None,
        }
    }

    async fn load_all(&self) -> Result<Vec<JobRecord>, StoreError> {
        // Jobs with a deadline are the ones in flight; finished ones expire on their own.
        let mut out = Vec::new();
        for b in 0..BUCKETS {
            let mut c = redis::cmd("ZRANGE");
            c.arg(self.due_key_of(b)).arg(0).arg(-1);
            let ids = self
                .run(vec![(b, c)])
                .await?
                .first()
                .map(as_strings)
                .unwrap_or_default();
            for chunk in ids.chunks(500) {
                out.extend(
                    self.load(chunk)
                        .await?
                        .into_iter()
                        .flatten()
                        .map(|s| s.record),
                );
            }
        }
        Ok(out)
    }
}

/// The serialised form of a shared worker entry.
#[derive(serde::Serialize, serde::Deserialize)]
struct WorkerJson {
    worker_id: String,
    capabilities: Vec<String>,
    ready_topics: Vec<String>,
    pool: String,
    max_parallel_jobs: i32,
}

impl From<&WorkerEntry> for WorkerJson {
    fn from(w: &WorkerEntry) -> Self {
        WorkerJson {
            worker_id: w.worker_id.clone(),
            capabilities: w.capabilities.iter().cloned().collect(),
            ready_topics: w.ready_topics.clone(),
            pool: w.pool.clone(),
            max_parallel_jobs: w.max_parallel_jobs,
        }
    }
}

impl From<WorkerJson> for WorkerEntry {
    fn from(w: WorkerJson) -> Self {
        WorkerEntry {
            worker_id: w.worker_id,
            capabilities: w.capabilities.into_iter().collect(),
            ready_topics: w.ready_topics,
            pool: w.pool,
            max_parallel_jobs: w.max_parallel_jobs,
            ..Default::default()
        }
    }
}
