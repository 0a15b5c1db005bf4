//! The wall clock the gate checks timestamps against and signers stamp requests with.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in whole seconds (a clock before 1970 counts as 0, which fails every timestamp).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
