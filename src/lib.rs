//! chatfiles: files attached to chat conversations, stored on local disk or in an S3-compatible
//! bucket with their records in SQLite, handed back through time-limited signed URLs.
#![warn(clippy::unwrap_used, clippy::expect_used)]

/// `chatfiles user ...`: account administration on the database.
pub mod admin;
/// What the download and listing paths keep in memory.
pub mod cache;
/// `chatfiles check`: stored bytes verified against the database.
pub mod check;
/// Where "now" comes from (system or hand-driven).
pub mod clock;
/// Flags and environment, validated once.
pub mod config;
/// SQLite pool, schema and queries.
pub mod db;
/// The one error type and the contract's JSON error shape.
pub mod error;
/// The media type a stored file is served with.
pub mod media_type;
/// Prometheus metrics and `GET /metrics`.
pub mod metrics;
/// Request id, error reshaping and the per-request log line.
pub mod middleware;
/// `chatfiles migrate`: copying every file's bytes to another object store.
pub mod migrate;
/// Resumable (tus) uploads' part files and locks.
pub mod resumable;
/// The cross-process counter of sessions ended behind the service's back.
pub mod revocations;
/// HTTP handlers, one module per concern.
pub mod routes;
/// The master secret and the keys derived from it.
pub mod secrets;
/// The SQLite-backed session store and typed session helpers.
pub mod session;
/// Signing and verifying download URLs.
pub mod signing;
/// Building and running the server.
pub mod startup;
/// What every handler shares.
pub mod state;
/// Where the bytes live: the storage directory or an S3-compatible bucket.
pub mod storage;
/// Login throttling and the client address it counts by.
pub mod throttle;
