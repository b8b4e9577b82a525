//! Prometheus metrics: what the envelope and handlers count, and `GET /metrics` in the text
//! exposition format (on the main address, or on `--metrics-bind` alone).

use actix_web::http::{Method, header};
use actix_web::{HttpResponse, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::db;
use crate::error::AppError;
use crate::routes::method_not_allowed;
use crate::state::AppState;

/// Latency buckets, in seconds: from a cached signed download to a large upload.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric the service keeps.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub uploaded_bytes: IntCounter,
    pub downloaded_bytes: IntCounter,
    signature_rejections: IntCounterVec,
    sessions_active: IntGauge,
    pool_in_use: IntGauge,
    pool_size: IntGauge,
}

/// Why a signed URL was refused (a label of `chatfiles_signature_rejections_total`).
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    Invalid,
    Expired,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "chatfiles_http_requests_total",
                "HTTP requests by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "chatfiles_http_request_duration_seconds",
                "Time from a request's arrival to its response head, by route pattern and method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let uploaded_bytes = IntCounter::new(
            "chatfiles_uploaded_bytes_total",
            "Bytes of files stored by uploads",
        )?;
        let downloaded_bytes = IntCounter::new(
            "chatfiles_downloaded_bytes_total",
            "Bytes of file content sent by signed downloads",
        )?;
        let signature_rejections = IntCounterVec::new(
            Opts::new(
                "chatfiles_signature_rejections_total",
                "Signed download URLs refused, by reason",
            ),
            &["reason"],
        )?;
        let sessions_active = IntGauge::new(
            "chatfiles_sessions_active",
            "Logged-in sessions that are still good (not expired, not ended by a password change)",
        )?;
        let pool_in_use = IntGauge::new(
            "chatfiles_db_pool_connections_in_use",
            "Database connections handed out right now",
        )?;
        let pool_size = IntGauge::new(
            "chatfiles_db_pool_connections",
            "Database connections open (in use or idle)",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(uploaded_bytes.clone()))?;
        registry.register(Box::new(downloaded_bytes.clone()))?;
        registry.register(Box::new(signature_rejections.clone()))?;
        registry.register(Box::new(sessions_active.clone()))?;
        registry.register(Box::new(pool_in_use.clone()))?;
        registry.register(Box::new(pool_size.clone()))?;
        // Both reasons show from the start, at zero, so that rates need no special case.
        for reason in ["invalid", "expired"] {
            signature_rejections.with_label_values(&[reason]);
        }
        Ok(Self {
            registry,
            requests,
            latency,
            uploaded_bytes,
            downloaded_bytes,
            signature_rejections,
            sessions_active,
            pool_in_use,
            pool_size,
        })
    }

    /// Counts one answered request. `route` is the matched pattern (never the raw path, whose
    /// ids would make the label set unbounded).
    pub fn observe(&self, route: Option<&str>, method: &Method, status: u16, seconds: f64) {
        let route = route.unwrap_or("unmatched");
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let mut status_buffer = itoa::Buffer::new();
        let status = status_buffer.format(status);
        self.requests
            .with_label_values(&[route, method, status])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    pub fn rejected(&self, reason: Rejection) {
        let label = match reason {
            Rejection::Invalid => "invalid",
            Rejection::Expired => "expired",
        };
        self.signature_rejections.with_label_values(&[label]).inc();
    }

    /// The text exposition, after refreshing the gauges read from the database and the pool.
    fn render(&self, sessions_active: i64, pool: r2d2::State) -> Result<Vec<u8>, AppError> {
        self.sessions_active.set(sessions_active);
        self.pool_size.set(i64::from(pool.connections));
        self.pool_in_use.set(i64::from(
            pool.connections.saturating_sub(pool.idle_connections),
        ));
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot encode metrics: {e}")))?;
        Ok(out)
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/metrics")
            .route(web::get().to(metrics))
            .default_service(method_not_allowed("GET")),
    );
}

/// Prometheus metrics
///
/// In the Prometheus text format: requests by route pattern, method and status, latencies,
/// bytes moved, signature rejections, live sessions, pool use. Served here unless
/// `--metrics-bind` gives it an address of its own.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 503, response = crate::routes::openapi::Unavailable),
    )
)]
pub(crate) async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let pool = state.db.pool_state();
    let now = state.clock.unix();
    let sessions = state
        .db
        .run(move |conn| db::count_live_sessions(conn, now))
        .await?;
    let body = state.metrics.render(sessions, pool)?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}
