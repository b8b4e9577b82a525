//! Integration tests: the real server over HTTP, one module per feature.

mod admin;
mod auth;
mod browser;
mod caching;
mod chats;
mod check;
mod chromium;
mod downloads;
mod file_modes;
mod files;
mod helpers;
mod hostile;
mod load;
mod logs;
mod media_types;
mod neptun_client;
mod object_store;
mod on_seaweedfs;
mod openapi;
mod operations;
mod password;
mod quota;
mod rotation;
#[path = "../support/seaweed.rs"]
mod seaweed;
mod store_outage;
mod throttle;
#[path = "../support/tools.rs"]
mod tools;
mod tus;
mod tus_clients;
