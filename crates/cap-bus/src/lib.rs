//! # cap-bus
//!
//! The message bus of CAP: a small [`Bus`] trait that moves bytes by subject, with
//! NATS subject semantics, and the transports that implement it.
//!
//! - [`MemoryBus`]: in-process, the embedded default (examples, tests, one-process
//!   deployments).
//! - [`NatsBus`] (feature `nats`): core NATS plus JetStream for the durable CAP
//!   subjects (`sys.job.submit`, `sys.job.result`, `job.>`).
//! - `conformance` (feature `conformance`): the contract as a test kit that any
//!   implementation, yours included, can run.
//!
//! ```
//! use cap_bus::{Bus, MemoryBus};
//! use futures_util::StreamExt;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let bus = MemoryBus::new();
//!
//! // A worker in queue group "job.echo" answers requests.
//! let mut jobs = bus.queue_subscribe("job.echo", "job.echo").await?;
//! let worker = bus.clone();
//! tokio::spawn(async move {
//!     while let Some(msg) = jobs.next().await {
//!         if let Some(reply) = msg.reply() {
//!             worker.publish(reply, msg.payload().clone()).await.ok();
//!         }
//!         msg.ack().await.ok(); // no-op here; real for JetStream deliveries
//!     }
//! });
//!
//! // An observer sees every job subject.
//! let mut observer = bus.subscribe("job.>").await?;
//!
//! let reply = bus.request("job.echo", "ping".into(), Duration::from_secs(1)).await?;
//! assert_eq!(reply.payload(), "ping");
//! assert_eq!(observer.next().await.unwrap().subject(), "job.echo");
//!
//! bus.close().await?;
//! assert!(observer.next().await.is_none()); // close ends every stream
//! # Ok::<(), cap_bus::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Using a bus generically or behind `dyn`
//! Hot paths take `B: Bus` (the futures are `Send`, the subscription type is an
//! associated type, nothing is boxed). Applications that pick the transport at run time
//! hold a [`SharedBus`] (`Arc<dyn DynBus>`), which implements [`Bus`] itself.
//!
//! ## Errors
//! One [`Error`] type, matchable by [`ErrorKind`], with [`Error::code`] giving the CAP
//! transport code (400 publish failed, 401 subscribe failed, 402 connection lost).
//!
//! ## Feature flags
//! - `nats` (default): [`NatsBus`] and [`NatsOptions`], on `async-nats`.
//! - `conformance`: the test kit of the contract.

mod bus;
pub mod check;
#[cfg(feature = "conformance")]
pub mod conformance;
mod dyn_bus;
mod error;
mod headers;
pub mod memory;
mod message;
#[cfg(feature = "nats")]
pub mod nats;
mod receipt;

pub use bus::Bus;
pub use dyn_bus::{BoxSubscription, DynBus, SharedBus};
pub use error::{Error, ErrorKind};
pub use headers::{Headers, MAX_HEADER_NAME_LEN, MAX_HEADER_VALUE_LEN};
pub use memory::{MemoryBus, MemoryOptions, MemoryStats, MemorySubscription, OverflowPolicy};
pub use message::{AckHandle, Acknowledge, Message};
#[cfg(feature = "nats")]
pub use nats::{NatsBus, NatsOptions};
pub use receipt::{ParseReceiptError, Receipt};
