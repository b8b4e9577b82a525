//! The framework ceiling for `bench/run.sh`: a bare actix-web server that answers the seed
//! endpoint's path with fixed JSON bytes held in memory (a real 100-file listing that the script
//! captured from chatfiles). No database, no session, no signing, no middleware: whatever
//! chatfiles' list endpoint reaches as a fraction of this is the share of the framework's own
//! speed that it keeps. Not part of the service.
//!
//! Environment:
//! - `CEILING_BODY`: path of the JSON file to serve (required);
//! - `CEILING_BIND`: address to listen on (default `127.0.0.1:8099`);
//! - `CEILING_WORKERS`: worker threads (default: number of CPUs, like chatfiles).
//!
//! Build and run: `cargo build --release --locked --example ceiling`, then
//! `CEILING_BODY=listing.json target/release/examples/ceiling`.

use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let path = std::env::var("CEILING_BODY").map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "CEILING_BODY must name the JSON file to serve",
        )
    })?;
    let body = Bytes::from(std::fs::read(&path)?);
    let bind = env_or("CEILING_BIND", "127.0.0.1:8099");
    let workers = match std::env::var("CEILING_WORKERS") {
        Ok(n) => n.parse::<usize>().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "CEILING_WORKERS must be a positive integer",
            )
        })?,
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    eprintln!(
        "ceiling: serving {} bytes from {path} on {bind} with {workers} workers",
        body.len()
    );
    HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/api/users/{user_id}/chats/{chat_id}/files",
            web::get().to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
                        .body(body)
                }
            }),
        )
    })
    .workers(workers.max(1))
    .bind(bind)?
    .run()
    .await
}
