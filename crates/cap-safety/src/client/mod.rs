//! [`SafetyClient`]: how a scheduler asks for decisions, whether the kernel is remote
//! ([`GrpcSafetyClient`]) or embedded ([`crate::Kernel`], no server needed).
//!
//! Hot paths stay generic over `C: SafetyClient`; [`DynSafetyClient`] is the object-safe
//! companion for code that holds an `Arc<dyn DynSafetyClient>`.

mod grpc;

pub use grpc::{ClientTls, GrpcClientOptions, GrpcSafetyClient, RULE_FAIL_CLOSED};

use crate::{Decision, Error, Kernel};
use cap_proto::v1::{PolicyCheckRequest, PolicyCheckResponse};
use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;

/// Asks a safety kernel for decisions.
///
/// Responses are normalized: a decision the caller does not know, or an unspecified one,
/// arrives as `DECISION_TYPE_DENY` (fail closed).
pub trait SafetyClient: Send + Sync {
    /// `Check`: the decision for a job.
    fn check(
        &self,
        req: &PolicyCheckRequest,
    ) -> impl Future<Output = Result<PolicyCheckResponse, Error>> + Send;

    /// `Evaluate`: same shape and meaning as `Check`.
    fn evaluate(
        &self,
        req: &PolicyCheckRequest,
    ) -> impl Future<Output = Result<PolicyCheckResponse, Error>> + Send {
        self.check(req)
    }
}

/// The object-safe companion of [`SafetyClient`] (boxed futures). Every `SafetyClient`
/// is one; `Arc<dyn DynSafetyClient>` is a `SafetyClient` again.
pub trait DynSafetyClient: Send + Sync {
    /// [`SafetyClient::check`], boxed.
    fn check_boxed<'a>(
        &'a self,
        req: &'a PolicyCheckRequest,
    ) -> BoxFuture<'a, Result<PolicyCheckResponse, Error>>;

    /// [`SafetyClient::evaluate`], boxed.
    fn evaluate_boxed<'a>(
        &'a self,
        req: &'a PolicyCheckRequest,
    ) -> BoxFuture<'a, Result<PolicyCheckResponse, Error>>;
}

impl<T: SafetyClient> DynSafetyClient for T {
    fn check_boxed<'a>(
        &'a self,
        req: &'a PolicyCheckRequest,
    ) -> BoxFuture<'a, Result<PolicyCheckResponse, Error>> {
        Box::pin(self.check(req))
    }

    fn evaluate_boxed<'a>(
        &'a self,
        req: &'a PolicyCheckRequest,
    ) -> BoxFuture<'a, Result<PolicyCheckResponse, Error>> {
        Box::pin(self.evaluate(req))
    }
}

impl SafetyClient for dyn DynSafetyClient {
    async fn check(&self, req: &PolicyCheckRequest) -> Result<PolicyCheckResponse, Error> {
        self.check_boxed(req).await
    }

    async fn evaluate(&self, req: &PolicyCheckRequest) -> Result<PolicyCheckResponse, Error> {
        self.evaluate_boxed(req).await
    }
}

impl<T: SafetyClient + ?Sized> SafetyClient for Arc<T> {
    fn check(
        &self,
        req: &PolicyCheckRequest,
    ) -> impl Future<Output = Result<PolicyCheckResponse, Error>> + Send {
        (**self).check(req)
    }

    fn evaluate(
        &self,
        req: &PolicyCheckRequest,
    ) -> impl Future<Output = Result<PolicyCheckResponse, Error>> + Send {
        (**self).evaluate(req)
    }
}

/// The in-process evaluator: decisions straight from the kernel's current snapshot.
impl SafetyClient for Kernel {
    fn check(
        &self,
        req: &PolicyCheckRequest,
    ) -> impl Future<Output = Result<PolicyCheckResponse, Error>> + Send {
        std::future::ready(Ok(Kernel::check(self, req)))
    }
}

/// The decision a response carries; unknown and unspecified values mean
/// [`Decision::Deny`].
pub fn decision_of(resp: &PolicyCheckResponse) -> Decision {
    Decision::from_wire(resp.decision).0
}

/// Rewrites an unknown or unspecified decision to `DECISION_TYPE_DENY`, saying so in the
/// reason.
pub fn normalize_response(mut resp: PolicyCheckResponse) -> PolicyCheckResponse {
    let (decision, fallback) = Decision::from_wire(resp.decision);
    if fallback {
        resp.reason = format!(
            "unknown decision value {} treated as deny; {}",
            resp.decision, resp.reason
        );
        resp.decision = decision.to_wire() as i32;
        resp.approval_required = false;
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _obj_safe(_: &dyn DynSafetyClient) {}

    #[test]
    fn unknown_decisions_become_deny() {
        let r = normalize_response(PolicyCheckResponse {
            decision: 42,
            reason: "x".into(),
            ..Default::default()
        });
        assert_eq!(decision_of(&r), Decision::Deny);
        assert_eq!(r.decision, 2);
        assert!(r.reason.contains("42"));
        let ok = normalize_response(PolicyCheckResponse {
            decision: 1,
            ..Default::default()
        });
        assert_eq!(ok.decision, 1);
        assert_eq!(ok.reason, "");
    }
}
