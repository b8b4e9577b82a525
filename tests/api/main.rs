//! Integration tests: the real server over HTTP, one module per feature.

mod auth;
mod chats;
mod check;
mod downloads;
mod files;
mod helpers;
mod hostile;
mod load;
mod password;
mod quota;
mod seed_client;
mod throttle;
