//! The dashboard in headless Chromium: a job that needs approval shows up held, the
//! page's approve button is clicked, and the page shows the job SUCCEEDED (live, from
//! the event stream) and its result. Chromium is driven over the DevTools protocol on
//! a pipe (`--remote-debugging-pipe`: fd 3 in, fd 4 out, NUL-separated JSON).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use base64::Engine as _;
use cap_blob::MemoryBlobStore;
use cap_bus::MemoryBus;
use cap_gateway::{Gateway, GatewayConfig};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Context, JobError, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::{MemoryJobStore, Scheduler, SchedulerOptions};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

const POLICY: &str = r#"
version: 1
rules:
  - id: payments-need-a-human
    match: { topics: ["job.payment"] }
    decision: require_approval
    reason: payments need sign-off
  - id: the-rest
    match: { topics: ["job.*"] }
    decision: allow
"#;

async fn pay(_ctx: Context, v: Value) -> Result<Value, JobError> {
    Ok(json!({"paid": true, "input": v}))
}

/// Chromium on a DevTools pipe.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    session: Option<String>,
    _profile: std::path::PathBuf,
}

impl Browser {
    async fn start() -> Self {
        let bin = [
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ]
        .into_iter()
        .find(|b| std::path::Path::new(b).exists())
        .expect(
            "chromium is required for this test (.ci/run installs it: apt-get install chromium)",
        );
        let profile = std::env::temp_dir().join(format!(
            "cap-gw-chromium-{}",
            cap_runtime::id::new_trace_id()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        // fd 3 ← our stdin pipe, fd 4 → our stdout pipe.
        let script = format!(
            "exec {bin} --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
             --no-first-run --window-size=1280,760 --user-data-dir={} --remote-debugging-pipe \
             about:blank 3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null",
            profile.display()
        );
        let mut child = tokio::process::Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("bash to start chromium");
        let to = child.stdin.take().unwrap();
        let from = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            to,
            from,
            next_id: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Sends a command (to the attached page, if any) and waits for its answer.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).await.unwrap();
        self.to.flush().await.unwrap();
        loop {
            let mut buf = Vec::new();
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.from.read_until(0, &mut buf))
                    .await
                    .expect("chromium answers within 20 s")
                    .unwrap();
            assert!(n > 0, "chromium closed its DevTools pipe");
            buf.pop();
            let v: Value = serde_json::from_slice(&buf).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page; its value.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Waits until `js` evaluates to true.
    async fn wait_for(&mut self, js: &str, what: &str) {
        for _ in 0..200 {
            if self.eval(js).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let html = self.eval("document.body.innerText").await;
        panic!("the page never showed {what}; it shows:\n{html}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium (apt-get install chromium): run by .ci/run"]
async fn a_held_job_is_approved_in_the_dashboard_and_succeeds() {
    let bus = MemoryBus::new();
    let blobs = MemoryBlobStore::emulating_redis(Default::default());
    let jobs = MemoryJobStore::new();
    let kernel = Kernel::new(Policy::from_text(POLICY, "policy.yaml").unwrap());
    let options = SchedulerOptions {
        tick: Duration::from_millis(20),
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let scheduler = Scheduler::new(
        Packets::new(bus.clone(), PacketConfig::new("scheduler-1")),
        Arc::new(kernel),
        jobs.clone(),
        options,
    );
    tokio::spawn(scheduler.run(stop.clone()));
    let worker = Worker::builder(bus.clone(), blobs.clone())
        .id("payments-worker")
        .handler("job.payment", pay)
        .handler("job.echo", pay)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let gateway = Gateway::new(
        Packets::new(bus, PacketConfig::new("gateway-1")),
        jobs,
        blobs,
        GatewayConfig::default().api_key("demo-key", "acme"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = gateway.clone();
    let serving = stop.clone();
    tokio::spawn(async move { gw.serve(listener, serving).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Two jobs: one that runs at once, one held for a human.
    use tower::ServiceExt as _;
    let mut ids = Vec::new();
    for (topic, prompt) in [("job.echo", "warm-up"), ("job.payment", "pay invoice 42")] {
        let req = axum::http::Request::post("/api/v1/jobs")
            .header("X-API-Key", "demo-key")
            .header("X-Tenant-ID", "acme")
            .header("Content-Type", "application/json")
            .body(axum::body::Body::from(
                json!({"topic": topic, "prompt": prompt}).to_string(),
            ))
            .unwrap();
        let res = gateway.router().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        ids.push(v["job_id"].as_str().unwrap().to_owned());
    }
    let held = ids[1].clone();

    let mut browser = Browser::start().await;
    let target = browser
        .call(
            "Target.createTarget",
            json!({"url": format!("http://{addr}/#key=demo-key&tenant=acme")}),
        )
        .await;
    let attached = browser
        .call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    browser.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    browser.call("Runtime.enable", json!({})).await;

    let button = format!("document.querySelector('button[data-approve=\"{held}\"]')");
    browser
        .wait_for(
            &format!("{button} !== null"),
            "the held job's approve button",
        )
        .await;
    let state_js = |id: &str| {
        format!(
            "(document.querySelector('tr[data-job=\"{id}\"] td[data-state]') || {{dataset: {{}}}}).dataset.state"
        )
    };
    assert_eq!(browser.eval(&state_js(&held)).await, json!("SCHEDULED"));
    browser.eval(&format!("{button}.click(); true")).await;
    browser
        .wait_for(
            &format!("{} === 'SUCCEEDED'", state_js(&held)),
            "the approved job SUCCEEDED",
        )
        .await;
    browser
        .wait_for(
            &format!("{button} === null"),
            "the job gone from the approvals",
        )
        .await;
    // Its detail, with the result.
    browser
        .eval(&format!(
            "document.querySelector('tr[data-job=\"{held}\"]').click(); true"
        ))
        .await;
    browser
        .wait_for(
            "document.getElementById('detail').textContent.includes('\"paid\": true')",
            "the job's result",
        )
        .await;
    let detail = browser
        .eval("document.getElementById('detail').textContent")
        .await;
    assert!(detail.as_str().unwrap().contains("APPROVED"), "{detail}");

    let shot = browser
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = std::env::var("CAP_DASHBOARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")
        });
    std::fs::write(&out, &png).unwrap();
    let _ = browser.call("Browser.close", json!({})).await;
    let _ = browser.child.wait().await;
    worker.shutdown(Duration::from_secs(1)).await;
    stop.cancel();
}
