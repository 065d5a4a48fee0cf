//! The trust service on a bus: a queue-group subscription to each handshake subject,
//! every request answered on its reply subject.

use super::server::TrustServer;
use cap_bus::{Bus, Message};
use cap_proto::subject;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Requests answered at once at most.
pub const MAX_IN_FLIGHT: usize = 64;

/// The queue group of trust servers with scheduler queue group `queue_group`.
pub fn queue_group(queue_group: &str) -> String {
    format!("{queue_group}-trust")
}

/// Subscribes to `sys.worker.handshake.challenge` and
/// `sys.worker.handshake.authenticate` in the queue group of `queue_group` (so scheduler
/// instances share the load) and answers until `shutdown`. Returns the tasks.
pub async fn spawn<B: Bus>(
    bus: &B,
    server: Arc<TrustServer>,
    queue_group: &str,
    shutdown: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, crate::shell::Error> {
    let group = self::queue_group(queue_group);
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = Vec::new();
    for subj in [
        subject::WORKER_HANDSHAKE_CHALLENGE,
        subject::WORKER_HANDSHAKE_AUTHENTICATE,
    ] {
        let sub = bus.queue_subscribe(subj, &group).await.map_err(|source| {
            crate::shell::Error::Subscribe {
                subject: subj.to_owned(),
                source,
            }
        })?;
        tasks.push(tokio::spawn(serve(
            bus.clone(),
            sub,
            server.clone(),
            limit.clone(),
            shutdown.clone(),
        )));
    }
    tracing::info!(queue_group = %group, "worker trust service listening");
    Ok(tasks)
}

async fn serve<B: Bus>(
    bus: B,
    mut sub: B::Subscription,
    server: Arc<TrustServer>,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (bus, server) = (bus.clone(), server.clone());
        tokio::spawn(async move {
            answer(&bus, &server, msg).await;
            drop(permit);
        });
    }
}

/// Answers one request (nothing when it has no reply subject).
pub async fn answer<B: Bus>(bus: &B, server: &TrustServer, msg: Message) {
    let Some(reply_to) = msg.reply() else {
        tracing::debug!(
            subject = msg.subject(),
            "trust request without a reply subject ignored"
        );
        return;
    };
    match server
        .handle(msg.subject(), msg.payload(), SystemTime::now())
        .await
    {
        Ok(reply) => {
            if let Err(e) = bus.publish(reply_to, reply.bytes).await {
                tracing::warn!(error = %e, "trust reply publish failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "trust reply could not be made"),
    }
}
