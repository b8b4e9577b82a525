//! Where "now" comes from: the system clock in production, a hand-driven one in tests.

use std::sync::Mutex;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

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
    let mut out = String::with_capacity(20);
    push_rfc3339(&mut out, unix);
    out
}

/// [`rfc3339`], appended to `out`. Written by hand rather than through a format string: a
/// listing formats one per file.
pub fn push_rfc3339(out: &mut String, unix: i64) {
    let at = DateTime::<Utc>::from_timestamp(unix, 0).unwrap_or_default();
    let year = at.year();
    if !(0..=9999).contains(&year) {
        // Outside four-digit years (never from our own clock) the general formatter takes over.
        use std::fmt::Write;
        let _ = write!(out, "{}", at.format("%Y-%m-%dT%H:%M:%SZ"));
        return;
    }
    let mut text = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, value: u32, width: usize| {
        let mut value = value;
        for i in (0..width).rev() {
            text[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year.unsigned_abs(), 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, at.second(), 2);
    // Digits and the separators above: ASCII throughout.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_seconds_with_z() {
        assert_eq!(rfc3339(1_710_928_800), "2024-03-20T10:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        // Outside four-digit years the general formatter takes over.
        assert_eq!(rfc3339(253_402_300_800), "+10000-01-01T00:00:00Z");
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
