//! Crash tests: the real binary killed with SIGKILL mid-write, restarted over the same storage
//! (a local directory, or a bucket of a real SeaweedFS node).

mod disk_full;
mod harness;
mod kills;
#[path = "../support/litestream.rs"]
mod litestream;
mod replication;
#[path = "../support/seaweed.rs"]
mod seaweed;
#[path = "../support/tools.rs"]
mod tools;
mod tus;
