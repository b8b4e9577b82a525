//! `GET /health` for load balancers and orchestrators, and `chatfiles healthcheck`, which asks
//! it from inside a container (the image has no curl).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;
use crate::error::AppError;
use crate::routes::method_not_allowed;
use crate::routes::openapi::ErrorResponse;
use crate::state::AppState;
use crate::storage::StoreError;

/// How long `chatfiles healthcheck` waits for the answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/health")
            .route(web::get().to(health))
            .route(web::head().to(health))
            .default_service(method_not_allowed("GET, HEAD")),
    );
}

/// `{"status": "ok"}`.
#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    pub status: HealthStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// 200 `{"status":"ok"}` when a query reads the database and the object store takes a write
/// (locally: the temp area and the objects directory; S3: a small probe object); 503 in the
/// contract's error shape, naming the part that failed, otherwise.
#[utoipa::path(
    method(get, head),
    path = "/health",
    tag = "operations",
    summary = "Whether the service can serve",
    responses(
        (status = 200, description = "A query runs and the object store takes a write",
            body = HealthResponse),
        (status = 503, description = "`Database unavailable`, `Storage is not writable` (the \
            storage directory) or `Object store unavailable` (S3 does not answer or refuses the \
            credentials)", body = ErrorResponse),
    )
)]
async fn health(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let database = state
        .db
        // Reads a page of the file (`SELECT 1` would not touch it).
        .run(|conn| {
            Ok(
                conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
                    r.get::<_, i64>(0)
                })?,
            )
        })
        .await;
    if let Err(err) = database {
        tracing::warn!(error = %err, "health: the database does not answer");
        return Err(AppError::Unhealthy("Database unavailable"));
    }
    match state.store.probe().await {
        Ok(()) => {}
        Err(StoreError::Unavailable(reason)) => {
            tracing::warn!(%reason, "health: the object store does not answer");
            return Err(AppError::Unhealthy("Object store unavailable"));
        }
        Err(err) => {
            tracing::warn!(error = %err, "health: the storage takes no writes");
            return Err(AppError::Unhealthy("Storage is not writable"));
        }
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(HealthResponse {
            status: HealthStatus::Ok,
        }))
}

/// Where to reach the service bound at `bind`: an unspecified address means this machine.
fn probe_address(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// The status code of `GET /health` at `address`.
fn probe(address: SocketAddr) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream.read(&mut head[read..])?;
        if n == 0 {
            break;
        }
        read += n;
    }
    // "HTTP/1.1 200 OK"
    std::str::from_utf8(&head[..read])
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// `chatfiles healthcheck`: exits 0 when the service at `--bind` answers `/health` with 200, 1
/// when it answers anything else or cannot be reached.
pub fn healthcheck(config: &Config) -> ExitCode {
    let address = probe_address(config.bind);
    match probe(address) {
        Ok(200) => {
            println!("healthy: http://{address}/health answered 200");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("unhealthy: http://{address}/health answered {status}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("unhealthy: cannot reach http://{address}/health: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_bind_is_probed_on_loopback() {
        let any: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
        assert_eq!(probe_address(any).to_string(), "127.0.0.1:8080");
        let any6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 80);
        assert_eq!(probe_address(any6).to_string(), "[::1]:80");
        let own: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 9);
        assert_eq!(probe_address(own), own);
    }
}
