//! Bus subscriptions → scheduler inputs.

use super::scheduler::Input;
use crate::core::{Event, JobEvent};
use cap_bus::{Bus, Message};
use cap_proto::v1::bus_packet::Payload;
use cap_runtime::packets::Packets;
use cap_runtime::trace_context;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An input about one job, or about the workers.
pub(crate) enum Item {
    /// For the job named.
    Job(String, JobEvent),
    /// Heartbeats, handshakes.
    Worker(Event),
}

/// Packets from one subscription → inputs.
pub(crate) async fn packets<B: Bus, St>(
    mut stream: St,
    packets: Packets<B>,
    gate: Option<std::sync::Arc<crate::trust::Gate>>,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) where
    St: futures_util::Stream<Item = Message> + Unpin,
{
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = stream.next() => match m { Some(m) => m, None => return },
        };
        // Either profile. A production redelivery (`duplicate`) goes on: the per-job
        // state machine applies a report once, and another instance may have admitted
        // the first copy without committing it.
        let Some(inbound) = packets.receive_checked(&msg, |_| true).await else {
            continue;
        };
        let pkt = inbound.packet;
        if inbound.duplicate {
            tracing::debug!(subject = %msg.subject(), "production redelivery handed to the job's state machine");
        }
        // Worker trust: packets of workers without a live session stop here (enforce).
        // The scheduler's own production packets were admitted with its own key.
        let own = inbound.production && pkt.sender_id == packets.sender_id();
        if !own
            && let Some(gate) = &gate
            && !gate.admit(&packets, msg.payload(), &pkt).await
        {
            let _ = msg.ack().await;
            continue;
        }
        if let Some(Payload::JobResult(r)) = &pkt.payload {
            trace_context::result_hop(msg.headers(), &pkt.trace_id, r);
        }
        let trace_id = pkt.trace_id;
        let sender = pkt.sender_id;
        let identity = pkt.identity;
        let item = match pkt.payload {
            Some(Payload::JobRequest(request)) => Item::Job(
                request.job_id.clone(),
                JobEvent::Submitted {
                    request,
                    trace_id,
                    sender,
                    identity,
                    claim: None,
                    internal: false,
                    chain: Vec::new(),
                    trace_parent: super::traces::submitted(msg.headers()),
                },
            ),
            Some(Payload::JobResult(result)) => {
                Item::Job(result.job_id.clone(), JobEvent::Result(result))
            }
            Some(Payload::JobProgress(progress)) => Item::Job(
                progress.job_id.clone(),
                JobEvent::Progress { progress, sender },
            ),
            Some(Payload::JobCancel(cancel)) => {
                Item::Job(cancel.job_id.clone(), JobEvent::Cancel(cancel))
            }
            Some(Payload::Heartbeat(heartbeat)) => Item::Worker(Event::Heartbeat { heartbeat }),
            Some(Payload::Handshake(handshake)) => Item::Worker(Event::Handshake { handshake }),
            _ => {
                tracing::warn!(subject = %msg.subject(), "unexpected payload on this subject; ignored");
                let _ = msg.ack().await;
                continue;
            }
        };
        if tx
            .send(Input::Item(Box::new(item), Some(msg)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The approval command (`{"job_id", "approve", "reason"}`) → inputs.
pub(crate) async fn approvals<St>(
    mut stream: St,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) where
    St: futures_util::Stream<Item = Message> + Unpin,
{
    #[derive(serde::Deserialize)]
    struct Command {
        job_id: String,
        approve: bool,
        #[serde(default)]
        reason: String,
    }
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = stream.next() => match m { Some(m) => m, None => return },
        };
        match serde_json::from_slice::<Command>(msg.payload()) {
            Ok(c) => {
                let input = Input::Approval {
                    job_id: c.job_id,
                    approve: c.approve,
                    reason: c.reason,
                    msg,
                };
                if tx.send(input).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "malformed approval command ignored"),
        }
    }
}
