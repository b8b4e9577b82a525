//! Where "now" comes from: the system clock in production, a hand-driven one in tests.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// A source of the current time, passed to everything whose result depends on it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Seconds since the Unix epoch.
    fn unix(&self) -> i64 {
        self.now().timestamp()
    }
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to, so tests can expire URLs and sessions without sleeping.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// RFC 3339 in UTC to the second with a `Z`, as the contract writes every timestamp.
pub fn rfc3339(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_seconds_with_z() {
        assert_eq!(rfc3339(1_710_928_800), "2024-03-20T10:00:00Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap_or_default();
        let clock = ManualClock::new(start);
        assert_eq!(clock.unix(), 1_000);
        clock.advance(Duration::seconds(61));
        assert_eq!(clock.unix(), 1_061);
    }
}
