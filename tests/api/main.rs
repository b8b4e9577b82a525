//! Integration tests: the real server over HTTP, one module per feature.

mod helpers;
