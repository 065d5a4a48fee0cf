//! Handlers: plain `async fn`s turned into `tower::Service`s.
//!
//! A typed handler is `async fn(Context, Input) -> Result<Output, E>` with
//! `Input: DeserializeOwned + JsonSchema`, `Output: Serialize + JsonSchema` and
//! `E: Into<JobError>`. Its service decodes the context JSON into `Input` (a mismatch is
//! a FAILED result with error 203 naming the field), runs the function and encodes
//! `Output` as JSON. A raw handler gets and returns bytes.

use crate::job::{Context, Job, JobError};
use bytes::Bytes;
use futures_core::future::BoxFuture;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::task::{Context as TaskContext, Poll};

/// A typed job handler: implemented by every
/// `Fn(Context, I) -> impl Future<Output = Result<O, E>>` that is `Clone + Send + Sync`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a typed CAP job handler",
    label = "expected `async fn(Context, Input) -> Result<Output, E>`",
    note = "Input: DeserializeOwned + JsonSchema, Output: Serialize + JsonSchema, E: Into<JobError>; the function must be Clone + Send + Sync + 'static and its future Send"
)]
pub trait Handler<I, O, E>: Clone + Send + Sync + 'static {
    /// The handler's future.
    type Future: Future<Output = Result<O, E>> + Send + 'static;
    /// Runs the handler.
    fn call(&self, ctx: Context, input: I) -> Self::Future;
}

impl<F, Fut, I, O, E> Handler<I, O, E> for F
where
    F: Fn(Context, I) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
{
    type Future = Fut;
    fn call(&self, ctx: Context, input: I) -> Fut {
        self(ctx, input)
    }
}

/// A raw job handler: `async fn(Context, Bytes) -> Result<Bytes, E>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a raw CAP job handler",
    label = "expected `async fn(Context, Bytes) -> Result<Bytes, E>`"
)]
pub trait RawHandler<E>: Clone + Send + Sync + 'static {
    /// The handler's future.
    type Future: Future<Output = Result<Bytes, E>> + Send + 'static;
    /// Runs the handler.
    fn call(&self, ctx: Context, input: Bytes) -> Self::Future;
}

impl<F, Fut, E> RawHandler<E> for F
where
    F: Fn(Context, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
{
    type Future = Fut;
    fn call(&self, ctx: Context, input: Bytes) -> Fut {
        self(ctx, input)
    }
}

/// Decodes JSON input into `I`; a mismatch names the field (error 203).
pub fn decode_input<I: DeserializeOwned>(bytes: &[u8]) -> Result<I, JobError> {
    // The common case decodes without tracking the path (which allocates per field);
    // only a failure is decoded again, to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            JobError::invalid_input(format!("input is not valid JSON: {inner}"))
        } else {
            JobError::invalid_input(format!(
                "input does not match the schema at `{path}`: {inner}"
            ))
        }
    })?;
    de.end()
        .map_err(|e| JobError::invalid_input(format!("input is not valid JSON: {e}")))?;
    Ok(value)
}

/// Encodes output as JSON.
pub fn encode_output<O: Serialize>(output: &O) -> Result<Bytes, JobError> {
    // Sized for a typical small output, so it rarely grows.
    let mut buf = Vec::with_capacity(64);
    serde_json::to_writer(&mut buf, output)
        .map(|()| Bytes::from(buf))
        .map_err(|e| {
            JobError::fatal(
                cap_proto::ErrorCode::UNSPECIFIED,
                format!("output does not encode as JSON: {e}"),
            )
        })
}

/// The service of a typed handler.
pub struct TypedService<H, I, O, E> {
    handler: H,
    _types: PhantomData<fn(I) -> (O, E)>,
}

impl<H: Clone, I, O, E> Clone for TypedService<H, I, O, E> {
    fn clone(&self) -> Self {
        TypedService {
            handler: self.handler.clone(),
            _types: PhantomData,
        }
    }
}

impl<H, I, O, E> TypedService<H, I, O, E> {
    /// Wraps `handler`.
    pub fn new(handler: H) -> Self {
        TypedService {
            handler,
            _types: PhantomData,
        }
    }
}

impl<H, I, O, E> tower::Service<Job> for TypedService<H, I, O, E>
where
    H: Handler<I, O, E>,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    E: Into<JobError> + Send + 'static,
{
    type Response = Bytes;
    type Error = JobError;
    type Future = BoxFuture<'static, Result<Bytes, JobError>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let handler = self.handler.clone();
        Box::pin(async move {
            let input: I = decode_input(&job.input)?;
            let output = handler.call(job.ctx, input).await.map_err(Into::into)?;
            encode_output(&output)
        })
    }
}

/// The service of a raw handler.
pub struct RawService<H, E> {
    handler: H,
    _types: PhantomData<fn() -> E>,
}

impl<H: Clone, E> Clone for RawService<H, E> {
    fn clone(&self) -> Self {
        RawService {
            handler: self.handler.clone(),
            _types: PhantomData,
        }
    }
}

impl<H, E> RawService<H, E> {
    /// Wraps `handler`.
    pub fn new(handler: H) -> Self {
        RawService {
            handler,
            _types: PhantomData,
        }
    }
}

impl<H, E> tower::Service<Job> for RawService<H, E>
where
    H: RawHandler<E>,
    E: Into<JobError> + Send + 'static,
{
    type Response = Bytes;
    type Error = JobError;
    type Future = BoxFuture<'static, Result<Bytes, JobError>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let handler = self.handler.clone();
        Box::pin(async move { handler.call(job.ctx, job.input).await.map_err(Into::into) })
    }
}

/// What is known about a registered handler.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HandlerInfo {
    /// The topic (subject) it serves.
    pub topic: String,
    /// JSON Schema of its input (typed handlers).
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of its output (typed handlers).
    pub output_schema: Option<serde_json::Value>,
}

/// The JSON Schema of `T`.
pub fn schema_of<T: JsonSchema>() -> serde_json::Value {
    schemars::schema_for!(T).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq, JsonSchema)]
    struct In {
        text: String,
        inner: Inner,
    }
    #[derive(Deserialize, Debug, PartialEq, JsonSchema)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn decode_errors_name_the_field() {
        let ok: In = decode_input(br#"{"text":"a","inner":{"n":1}}"#).unwrap();
        assert_eq!(ok.inner.n, 1);
        let e = decode_input::<In>(br#"{"text":"a","inner":{"n":"x"}}"#).unwrap_err();
        assert_eq!(e.code(), cap_proto::ErrorCode::JOB_INVALID_INPUT);
        assert!(e.message().contains("inner.n"), "{}", e.message());
        let e = decode_input::<In>(br#"{"inner":{"n":1}}"#).unwrap_err();
        assert!(e.message().contains("text"), "{}", e.message());
        let e = decode_input::<In>(b"{not json").unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{}", e.message());
        let e = decode_input::<In>(br#"{"text":"a","inner":{"n":1}} trailing"#).unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{}", e.message());
    }

    #[test]
    fn schemas_describe_the_types() {
        let s = schema_of::<In>();
        assert_eq!(s["type"], "object");
        assert!(s["properties"]["text"].is_object(), "{s}");
    }
}
