//! Prometheus metrics of the gateway: HTTP requests by method, route and status, and
//! their latency by route. Routes are the router's patterns (`/api/v1/jobs/{id}`), never
//! the request path, so the label sets stay bounded.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cap_runtime::metrics::prometheus_client::metrics::counter::Counter;
use cap_runtime::metrics::prometheus_client::metrics::family::Family;
use cap_runtime::metrics::prometheus_client::metrics::histogram::Histogram;
use cap_runtime::metrics::{Registry, latency_histogram};
use std::time::Instant;

type Labels = Vec<(&'static str, String)>;

/// The gateway's request counters and latency histograms; register them with
/// [`GatewayMetrics::register`] and hand them to
/// [`GatewayConfig::metrics`](crate::GatewayConfig::metrics).
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl GatewayMetrics {
    /// Registers `cap_gateway_requests_total{method,route,status}` and
    /// `cap_gateway_request_seconds{method,route}` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = GatewayMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(
            "cap_gateway_requests",
            "HTTP requests answered, by method, route pattern and status code",
            m.requests.clone(),
        );
        registry.register(
            "cap_gateway_request_seconds",
            "Time to answer an HTTP request (to the response head), by method and route pattern",
            m.latency.clone(),
        );
        m
    }

    fn record(&self, method: &str, route: &str, status: u16, started: Instant) {
        let base = vec![("method", method.to_owned()), ("route", route.to_owned())];
        self.latency
            .get_or_create(&base)
            .observe(started.elapsed().as_secs_f64());
        let mut labels = base;
        labels.push(("status", status.to_string()));
        self.requests.get_or_create(&labels).inc();
    }
}

/// The middleware that counts every request.
pub(crate) async fn track(
    State(metrics): State<GatewayMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.record(&method, &route, response.status().as_u16(), started);
    response
}
