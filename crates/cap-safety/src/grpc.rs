//! The generated tonic stubs of `cordum.agent.v1.SafetyKernel` (client and server), and
//! the server implementation backed by a [`Kernel`].
//!
//! Produced by `cargo xtask codegen` from `proto/cordum/agent/v1/safety.proto`; every
//! message type is `cap_proto::v1`'s.

use crate::{Error, ErrorKind, Kernel};
use cap_proto::v1::{
    ListSnapshotsRequest, ListSnapshotsResponse, PolicyCheckRequest, PolicyCheckResponse,
};
use tonic::{Request, Response, Status};

#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms,
    unused_qualifications
)]
mod generated {
    include!("gen/cordum.agent.v1.rs");
}

pub use generated::{safety_kernel_client, safety_kernel_server};

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "cordum.agent.v1.SafetyKernel";

#[tonic::async_trait]
impl safety_kernel_server::SafetyKernel for Kernel {
    async fn check(
        &self,
        request: Request<PolicyCheckRequest>,
    ) -> Result<Response<PolicyCheckResponse>, Status> {
        Ok(Response::new(Kernel::check(self, request.get_ref())))
    }

    async fn evaluate(
        &self,
        request: Request<PolicyCheckRequest>,
    ) -> Result<Response<PolicyCheckResponse>, Status> {
        Ok(Response::new(Kernel::check(self, request.get_ref())))
    }

    async fn explain(
        &self,
        request: Request<PolicyCheckRequest>,
    ) -> Result<Response<PolicyCheckResponse>, Status> {
        Ok(Response::new(Kernel::explain(self, request.get_ref())))
    }

    async fn simulate(
        &self,
        request: Request<PolicyCheckRequest>,
    ) -> Result<Response<PolicyCheckResponse>, Status> {
        let req = request.into_inner();
        if req.effective_config.is_empty() {
            return Kernel::simulate(self, &req)
                .map(Response::new)
                .map_err(to_status);
        }
        // Compiling a candidate policy (up to the message size limit) is real work: keep it
        // off the runtime's worker threads.
        let kernel = self.clone();
        tokio::task::spawn_blocking(move || kernel.simulate(&req))
            .await
            .map_err(|e| Status::internal(format!("simulate failed: {e}")))?
            .map(Response::new)
            .map_err(to_status)
    }

    async fn list_snapshots(
        &self,
        _request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        Ok(Response::new(ListSnapshotsResponse {
            snapshots: self.snapshots(),
        }))
    }
}

fn to_status(e: Error) -> Status {
    match e.kind() {
        ErrorKind::InvalidPolicy | ErrorKind::InvalidRequest => {
            Status::invalid_argument(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}
