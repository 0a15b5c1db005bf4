//! sig-gate: a verifying reverse proxy for HMAC-signed internal requests.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod config;
