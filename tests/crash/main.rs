//! Crash tests: the real binary killed with SIGKILL mid-write, restarted over the same storage.

mod disk_full;
mod harness;
mod kills;
#[path = "../support/tools.rs"]
mod tools;
