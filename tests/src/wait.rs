//! Waiting for a condition the system reaches on its own time (a watch, a reconcile).
use std::time::{Duration, Instant};

/// Polls `condition` every 50 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
