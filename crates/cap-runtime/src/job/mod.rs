//! A job as handlers and middleware see it: [`Job`] (context plus input bytes),
//! [`Context`], [`JobError`], and the boxed service type every handler becomes.

mod context;
mod error;

pub(crate) use context::ContextParts;
pub use context::{Context, ProgressSink};
pub use error::{JobError, JobErrorKind};

use bytes::Bytes;

/// One invocation: the job's context and its input (the context blob's bytes, usually
/// JSON). Cloning is cheap, so retry middleware can call again.
#[derive(Clone, Debug)]
pub struct Job {
    /// The job's context.
    pub ctx: Context,
    /// The input bytes.
    pub input: Bytes,
}

/// Every handler, with its middleware, is this `tower::Service`: a [`Job`] in, the
/// output bytes (stored at `res:<job_id>`) or a [`JobError`] out.
pub type HandlerService = tower::util::BoxCloneSyncService<Job, Bytes, JobError>;
