//! Integration tests: the real server over HTTP, one module per feature.

mod auth;
mod chats;
mod downloads;
mod files;
mod helpers;
mod seed_client;
