//! [`Caller`]: who is asking. Every `/api` handler takes one; extracting it checks the
//! API key, the tenant header and the rate limit.

use crate::{ApiError, Gateway};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_scheduler::JobStore;
use std::sync::Arc;

/// Headers naming the tenant (the generated cordum client sends the first, its facade
/// the second).
pub const TENANT_HEADERS: [&str; 2] = ["x-tenant-id", "x-cordum-tenant"];

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The tenant its API key maps to (and its tenant header names).
    pub tenant: String,
}

fn header<'a>(parts: &'a Parts, name: &str) -> Result<Option<&'a str>, ApiError> {
    match parts.headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ApiError::bad_request("bad_header", format!("header {name} is not text"))),
    }
}

impl<B: Bus, S: JobStore, O: BlobStore + 'static> FromRequestParts<Arc<Gateway<B, S, O>>>
    for Caller
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        gw: &Arc<Gateway<B, S, O>>,
    ) -> Result<Self, Self::Rejection> {
        let key = match header(parts, "x-api-key")? {
            Some(k) if !k.is_empty() => Some(k),
            _ => header(parts, "authorization")?
                .and_then(|a| a.strip_prefix("Bearer ").or(a.strip_prefix("bearer ")))
                .map(str::trim),
        };
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(ApiError::unauthorized(
                "an API key is required (X-API-Key or Authorization: Bearer)",
            ));
        };
        let Some(tenant) = gw.config.tenant_of(key) else {
            return Err(ApiError::unauthorized("unknown API key"));
        };
        let mut named = None;
        for h in TENANT_HEADERS {
            if let Some(t) = header(parts, h)?.filter(|t| !t.is_empty()) {
                if t != tenant {
                    return Err(ApiError::forbidden(format!(
                        "this API key is not allowed to act for tenant {t:?}"
                    )));
                }
                named = Some(t);
            }
        }
        if named.is_none() {
            return Err(ApiError::bad_request(
                "tenant_required",
                "a tenant header is required (X-Tenant-ID or X-Cordum-Tenant)",
            ));
        }
        if !gw.admit(key) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this API key; retry after a second",
            ));
        }
        Ok(Caller {
            tenant: tenant.to_owned(),
        })
    }
}
