//! The wall clock that limits are judged by: windows, days, weeks, expiry and activation.
//!
//! It is the system clock plus an offset that only tests move (`advance`), so that a test can
//! roll a window over or cross midnight without sleeping. Everything else (timeouts, leases of
//! accounts, health) runs on tokio's and the system's clocks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        jiff::Timestamp::now()
            .as_millisecond()
            .saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    pub fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.now_ms()).unwrap_or_else(|_| jiff::Timestamp::now())
    }

    /// Moves this clock forward (tests: roll a window over without waiting).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Sets this clock to `at` (tests: just before a midnight).
    pub fn set(&self, at: jiff::Timestamp) {
        let offset = at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
        self.offset_ms.store(offset, Ordering::Relaxed);
    }
}
