//! `cap job get|list|watch|result|cancel` and `cap approvals list|approve|reject`: the
//! job views of the gateway, read over its HTTP API (`--gateway URL --api-key KEY
//! --tenant T`) or straight from the scheduler's job store (Redis) and the bus.

use super::worker::runtime;
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use cap_blob::{BlobStore, RedisBlobStore, RedisConfig};
use cap_bus::{Bus, NatsBus, NatsOptions};
use cap_gateway::views::{self, ApprovalItem, JobDetail, JobSummary, Page};
use cap_proto::{JobState, Pointer, subject, v1};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_scheduler::shell::APPROVAL_SUBJECT;
use cap_scheduler::{JobStore, RedisJobStore};
use clap::{Args, Subcommand};
use http_body_util::BodyExt as _;
use std::process::ExitCode;
use std::time::Duration;

/// Where the job views come from, and how to print them.
#[derive(Args, Clone, Debug)]
pub struct Source {
    /// The gateway (`http://127.0.0.1:8080`); without it the job store is read directly.
    #[arg(long, env = "CAP_GATEWAY")]
    pub gateway: Option<String>,
    /// API key for the gateway.
    #[arg(long, env = "CAP_API_KEY")]
    pub api_key: Option<String>,
    /// The tenant (required over the gateway and to list; reading the store directly,
    /// it limits what is shown to that tenant's jobs).
    #[arg(long, env = "CAP_TENANT")]
    pub tenant: Option<String>,
    /// Redis of the job store (direct reads).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis: String,
    /// Key prefix of the job store (the scheduler's `--store-prefix`).
    #[arg(long, default_value = "cap:sched:")]
    pub store_prefix: String,
    /// NATS (direct cancels and approvals).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `cap job …`.
#[derive(Subcommand)]
pub enum JobCommand {
    /// One job: state, times, decisions, result.
    Get {
        /// The job id.
        id: String,
        #[command(flatten)]
        src: Source,
    },
    /// The tenant's jobs, newest first.
    List {
        /// Only jobs in this state (SUCCEEDED, RUNNING, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Jobs per page.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Go on from this cursor (printed after a full page).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        src: Source,
    },
    /// Print a job's state changes as they happen, until it ends.
    Watch {
        /// The job id.
        id: String,
        #[command(flatten)]
        src: Source,
    },
    /// Print a job's output (exit 1 if it did not succeed).
    Result {
        /// The job id.
        id: String,
        #[command(flatten)]
        src: Source,
    },
    /// Cancel a job.
    Cancel {
        /// The job id.
        id: String,
        #[command(flatten)]
        src: Source,
    },
}

/// `cap approvals …`.
#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Jobs waiting for a human decision.
    List {
        #[command(flatten)]
        src: Source,
    },
    /// Approve a held job.
    Approve {
        /// The job id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        src: Source,
    },
    /// Reject a held job.
    Reject {
        /// The job id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        src: Source,
    },
}

/// A minimal HTTP/1.1 client of the gateway (one connection per request).
struct Http {
    host: String,
    port: u16,
    key: String,
    tenant: String,
}

impl Http {
    fn new(url: &str, key: Option<&str>, tenant: Option<&str>) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--gateway {url}: only http:// URLs"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().context("--gateway port")?),
            None => (hostport.to_owned(), 80),
        };
        Ok(Http {
            host,
            port,
            key: key
                .ok_or_else(|| anyhow!("--api-key (or CAP_API_KEY) is needed with --gateway"))?
                .to_owned(),
            tenant: tenant
                .ok_or_else(|| anyhow!("--tenant (or CAP_TENANT) is needed with --gateway"))?
                .to_owned(),
        })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        last_event_id: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to the gateway at {}:{}", self.host, self.port))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("x-api-key", &self.key)
            .header("x-tenant-id", &self.tenant);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&v)?)
            }
            None => Bytes::new(),
        };
        Ok(sender
            .send_request(req.body(http_body_util::Full::new(body))?)
            .await?)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let res = self.send(method, path, body, None).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let msg = v["error"]["message"].as_str().unwrap_or("").to_owned();
            bail!("gateway: {status}: {msg}");
        }
        serde_json::from_slice(&bytes).context("gateway answer")
    }
}

/// Reads the job store (and blobs, bus) directly.
struct Direct {
    jobs: RedisJobStore,
    src: Source,
}

impl Direct {
    async fn new(src: &Source) -> Result<Self> {
        Ok(Direct {
            jobs: RedisJobStore::connect(&src.redis, src.store_prefix.clone()).await?,
            src: src.clone(),
        })
    }

    async fn record(&self, id: &str) -> Result<cap_scheduler::core::JobRecord> {
        let r = self
            .jobs
            .load(&[id.to_owned()])
            .await?
            .pop()
            .flatten()
            .map(|s| s.record)
            .filter(|r| self.src.tenant.as_deref().is_none_or(|t| t == r.tenant()));
        r.ok_or_else(|| anyhow!("no job {id}"))
    }

    async fn detail(&self, id: &str) -> Result<JobDetail> {
        let record = self.record(id).await?;
        let mut result = None;
        if let Some(r) = &record.result
            && r.status == v1::JobStatus::Succeeded as i32
            && let Ok(p) = Pointer::parse(&r.result_ptr)
        {
            let blobs = RedisBlobStore::connect(RedisConfig::new(self.src.redis.clone()))
                .await
                .context("connecting to Redis (blobs)")?;
            if let Ok(bytes) = blobs.get_ptr(&p).await {
                result = Some(views::inline_result(&bytes));
            }
        }
        Ok(views::detail(&record, result))
    }

    async fn bus(&self) -> Result<NatsBus> {
        NatsBus::connect(NatsOptions::new(&self.src.nats).without_jetstream())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.src.nats))
    }
}

enum Backend {
    Http(Http),
    Direct(Box<Direct>),
}

impl Backend {
    async fn new(src: &Source) -> Result<Self> {
        Ok(match &src.gateway {
            Some(url) => Backend::Http(Http::new(
                url,
                src.api_key.as_deref(),
                src.tenant.as_deref(),
            )?),
            None => Backend::Direct(Box::new(Direct::new(src).await?)),
        })
    }

    async fn get(&self, id: &str) -> Result<JobDetail> {
        match self {
            Backend::Http(h) => h.call("GET", &format!("/api/v1/jobs/{id}"), None).await,
            Backend::Direct(d) => d.detail(id).await,
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn short_time(t: &str) -> String {
    t.replace('T', " ").trim_end_matches('Z').to_owned()
}

fn print_detail(d: &JobDetail) {
    let waiting = d
        .waiting_for
        .as_deref()
        .map(|w| format!(" (waiting for {w})"))
        .unwrap_or_default();
    println!("job        {}", d.id);
    println!("state      {}{waiting}", d.state);
    println!("topic      {}", d.topic);
    println!("tenant     {}", d.tenant);
    println!("created    {}", short_time(&d.created_at));
    println!("updated    {}", short_time(&d.updated_at));
    if let Some(t) = &d.completed_at {
        println!("completed  {}", short_time(t));
    }
    println!("attempts   {}", d.attempts);
    if !d.worker_id.is_empty() {
        println!("worker     {}", d.worker_id);
    }
    if let Some(e) = &d.error {
        println!("error      {e}");
    }
    for dec in &d.decisions {
        println!(
            "decision   {} {} {}",
            dec.action,
            dec.rule_id,
            if dec.reason.is_empty() {
                ""
            } else {
                &dec.reason
            }
        );
    }
    if let Some(p) = &d.result_ptr {
        println!("result_ptr {p}");
    }
    if let Some(r) = &d.result {
        println!("result     {r}");
    }
}

fn print_summaries(items: &[JobSummary]) {
    println!("{:<38} {:<22} {:<24} UPDATED", "JOB", "STATE", "TOPIC");
    for j in items {
        let state = match &j.waiting_for {
            Some(w) => format!("{} ({w})", j.state),
            None => j.state.clone(),
        };
        println!(
            "{:<38} {:<22} {:<24} {}",
            j.id,
            state,
            j.topic,
            short_time(&j.updated_at)
        );
    }
}

fn query(
    state: &Option<String>,
    topic: &Option<String>,
    limit: usize,
    cursor: &Option<String>,
) -> String {
    let mut q = format!("limit={limit}");
    for (k, v) in [("state", state), ("topic", topic), ("cursor", cursor)] {
        if let Some(v) = v {
            q.push_str(&format!("&{k}={}", urlencode(v)));
        }
    }
    q
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `cap job …`.
pub fn job(c: JobCommand) -> Result<ExitCode> {
    runtime()?.block_on(run_job(c))
}

/// `cap job …` inside a runtime.
pub async fn run_job(c: JobCommand) -> Result<ExitCode> {
    match c {
        JobCommand::Get { id, src } => {
            let d = Backend::new(&src).await?.get(&id).await?;
            if src.json {
                print_json(&d)?;
            } else {
                print_detail(&d);
            }
        }
        JobCommand::Result { id, src } => {
            let d = Backend::new(&src).await?.get(&id).await?;
            if d.state != "SUCCEEDED" {
                let why = d.error.clone().unwrap_or_else(|| match &d.waiting_for {
                    Some(w) => format!("waiting for {w}"),
                    None => "not finished".into(),
                });
                eprintln!("job {id} is {}: {why}", d.state);
                return Ok(ExitCode::from(1));
            }
            print_json(&d.result.unwrap_or(serde_json::Value::Null))?;
        }
        JobCommand::List {
            state,
            topic,
            limit,
            cursor,
            src,
        } => {
            let page: Page<JobSummary> = match Backend::new(&src).await? {
                Backend::Http(h) => {
                    h.call(
                        "GET",
                        &format!("/api/v1/jobs?{}", query(&state, &topic, limit, &cursor)),
                        None,
                    )
                    .await?
                }
                Backend::Direct(d) => {
                    let tenant = src.tenant.clone().ok_or_else(|| {
                        anyhow!("--tenant (or CAP_TENANT) is needed to list jobs")
                    })?;
                    direct_list(&d, &tenant, &state, &topic, limit, &cursor).await?
                }
            };
            if src.json {
                print_json(&page)?;
            } else {
                print_summaries(&page.items);
                if let Some(c) = &page.next_cursor {
                    println!("more: --cursor {c}");
                }
            }
        }
        JobCommand::Cancel { id, src } => {
            let answer: serde_json::Value = match Backend::new(&src).await? {
                Backend::Http(h) => {
                    h.call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
                        .await?
                }
                Backend::Direct(d) => {
                    let record = d.record(&id).await?;
                    if record.state.is_terminal() {
                        bail!("job {id} already ended: {}", record.state);
                    }
                    let bus = d.bus().await?;
                    let packets = Packets::new(
                        bus.clone(),
                        PacketConfig::new(cap_runtime::id::new_component_id("cli")),
                    );
                    let cancel = v1::JobCancel {
                        job_id: id.clone(),
                        reason: "cancelled with cap job cancel".into(),
                        requested_by: packets.sender_id().to_owned(),
                        ..Default::default()
                    };
                    packets
                        .publish(subject::CANCEL, packets.envelope(&record.trace_id, cancel))
                        .await?;
                    let mut state = record.state.to_string();
                    for _ in 0..60 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let r = d.record(&id).await?;
                        state = r.state.to_string();
                        if r.state.is_terminal() {
                            break;
                        }
                    }
                    let _ = bus.close().await;
                    serde_json::json!({"id": id, "state": state})
                }
            };
            if src.json {
                print_json(&answer)?;
            } else {
                println!("job {id}: {}", answer["state"].as_str().unwrap_or("?"));
            }
        }
        JobCommand::Watch { id, src } => return watch(&id, &src).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn direct_list(
    d: &Direct,
    tenant: &str,
    state: &Option<String>,
    topic: &Option<String>,
    limit: usize,
    cursor: &Option<String>,
) -> Result<Page<JobSummary>> {
    let mut cur = match cursor {
        Some(c) => Some(views::parse_cursor(c).ok_or_else(|| anyhow!("bad --cursor {c}"))?),
        None => None,
    };
    let want_state = state.as_deref().map(str::to_ascii_uppercase);
    let mut items = Vec::new();
    let mut last = None;
    'pages: loop {
        let records = d.jobs.tenant_jobs(tenant, cur.clone(), 200).await?;
        let n = records.len();
        for r in records {
            cur = Some((r.created(), r.id().to_owned()));
            let ok = want_state
                .as_deref()
                .is_none_or(|s| r.state.to_string() == s)
                && topic.as_deref().is_none_or(|t| t == r.request.topic);
            if ok {
                if items.len() == limit {
                    break 'pages;
                }
                last = Some(views::cursor_of(&r));
                items.push(views::summary(&r));
            }
        }
        if n < 200 {
            last = None;
            break;
        }
    }
    Ok(Page {
        next_cursor: if items.len() == limit { last } else { None },
        items,
    })
}

async fn watch(id: &str, src: &Source) -> Result<ExitCode> {
    let print = |state: &str, at: &str, json: bool| {
        if json {
            println!(
                "{}",
                serde_json::json!({"job_id": id, "state": state, "at": at})
            );
        } else {
            println!("{}  {state}", short_time(at));
        }
    };
    let final_state = match Backend::new(src).await? {
        Backend::Http(h) => {
            let res = h
                .send("GET", &format!("/api/v1/jobs/{id}/events"), None, None)
                .await?;
            if !res.status().is_success() {
                bail!("gateway: {} for job {id}", res.status());
            }
            let mut body = res.into_body();
            let mut buf = String::new();
            let mut last = String::new();
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.push_str(&String::from_utf8_lossy(data));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let data: String = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim)
                        .collect();
                    let is_state = block
                        .lines()
                        .any(|l| l.trim() == "event: state" || l.trim() == "event:state");
                    if let (true, Ok(v)) =
                        (is_state, serde_json::from_str::<serde_json::Value>(&data))
                    {
                        let state = v["state"].as_str().unwrap_or("").to_owned();
                        print(&state, v["at"].as_str().unwrap_or(""), src.json);
                        last = state;
                    }
                }
            }
            last
        }
        Backend::Direct(d) => {
            let mut shown = 0;
            loop {
                let r = d.record(id).await?;
                for (at, state) in r.history.iter().skip(shown) {
                    print(state, &views::rfc3339(*at), src.json);
                }
                shown = r.history.len();
                if r.state.is_terminal() {
                    break r.state.to_string();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    Ok(if final_state == JobState::Succeeded.to_string() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs `cap approvals …`.
pub fn approvals(c: ApprovalsCommand) -> Result<ExitCode> {
    runtime()?.block_on(run_approvals(c))
}

/// `cap approvals …` inside a runtime.
pub async fn run_approvals(c: ApprovalsCommand) -> Result<ExitCode> {
    match c {
        ApprovalsCommand::List { src } => {
            let items: Vec<ApprovalItem> = match Backend::new(&src).await? {
                Backend::Http(h) => {
                    let p: Page<ApprovalItem> =
                        h.call("GET", "/api/v1/approvals?limit=500", None).await?;
                    p.items
                }
                Backend::Direct(d) => {
                    let tenant = src.tenant.clone().ok_or_else(|| {
                        anyhow!("--tenant (or CAP_TENANT) is needed to list approvals")
                    })?;
                    let mut out = Vec::new();
                    let mut cur = None;
                    loop {
                        let records = d.jobs.tenant_jobs(&tenant, cur.clone(), 500).await?;
                        let n = records.len();
                        for r in &records {
                            cur = Some((r.created(), r.id().to_owned()));
                            out.extend(views::approval(r));
                        }
                        if n < 500 {
                            break;
                        }
                    }
                    out
                }
            };
            if src.json {
                print_json(&items)?;
            } else {
                println!("{:<38} {:<24} {:<20} REASON", "JOB", "TOPIC", "RULE");
                for i in &items {
                    println!(
                        "{:<38} {:<24} {:<20} {}",
                        i.job.id,
                        i.job.topic,
                        i.policy_rule_id.as_deref().unwrap_or(""),
                        i.policy_reason.as_deref().unwrap_or("")
                    );
                }
            }
        }
        ApprovalsCommand::Approve { id, reason, src } => {
            return decide(&id, true, &reason, &src).await;
        }
        ApprovalsCommand::Reject { id, reason, src } => {
            return decide(&id, false, &reason, &src).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn decide(id: &str, approve: bool, reason: &str, src: &Source) -> Result<ExitCode> {
    let verb = if approve { "approve" } else { "reject" };
    let message = match Backend::new(src).await? {
        Backend::Http(h) => {
            let _: serde_json::Value = h
                .call(
                    "POST",
                    &format!("/api/v1/approvals/{id}/{verb}"),
                    Some(serde_json::json!({"reason": reason})),
                )
                .await?;
            format!("job {id} {}", if approve { "approved" } else { "rejected" })
        }
        Backend::Direct(d) => {
            d.record(id).await?;
            let bus = d.bus().await?;
            let body = serde_json::json!({"job_id": id, "approve": approve, "reason": reason});
            let reply = bus
                .request(
                    APPROVAL_SUBJECT,
                    serde_json::to_vec(&body)?.into(),
                    Duration::from_secs(5),
                )
                .await
                .context("asking the scheduler (is one running?)")?;
            let v: serde_json::Value = serde_json::from_slice(reply.payload())?;
            let _ = bus.close().await;
            if v["ok"].as_bool() != Some(true) {
                bail!("{}", v["message"].as_str().unwrap_or("refused"));
            }
            v["message"].as_str().unwrap_or("").to_owned()
        }
    };
    if src.json {
        print_json(&serde_json::json!({"job_id": id, "decision": verb, "message": message}))?;
    } else {
        println!("{message}");
    }
    Ok(ExitCode::SUCCESS)
}
