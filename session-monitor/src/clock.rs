//! Time bases. The probes stamp events with CLOCK_BOOTTIME (`bpf_ktime_get_boot_ns`),
//! which keeps counting through suspend, so an idle laptop lid counts as idle. The
//! daemon converts to wall-clock time only for display and the audit log.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Nanoseconds since boot, the probes' time base.
pub fn boot_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Wall-clock time of a boot-time instant.
pub fn boot_to_system(ns: u64) -> SystemTime {
    let now_boot = boot_ns();
    let now = SystemTime::now();
    if ns <= now_boot {
        now - Duration::from_nanos(now_boot - ns)
    } else {
        now + Duration::from_nanos(ns - now_boot)
    }
}

/// Boot-time instant of a wall-clock time (saturating at boot).
pub fn system_to_boot(t: SystemTime) -> u64 {
    let now_boot = boot_ns();
    match SystemTime::now().duration_since(t) {
        Ok(ago) => now_boot.saturating_sub(ago.as_nanos() as u64),
        Err(ahead) => now_boot + ahead.duration().as_nanos() as u64,
    }
}

/// RFC 3339 in UTC, e.g. `2026-11-25T02:04:15.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    OffsetDateTime::from_unix_timestamp_nanos(secs.as_nanos() as i128)
        .ok()
        .and_then(|dt| dt.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Seconds between two boot-time instants, rounded to a tenth.
pub fn seconds_between(from_ns: u64, to_ns: u64) -> f64 {
    let ns = to_ns.saturating_sub(from_ns);
    (ns as f64 / 1e8).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_and_wall_round_trip_within_a_millisecond() {
        let now = SystemTime::now();
        let back = boot_to_system(system_to_boot(now));
        let diff = match back.duration_since(now) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(diff < Duration::from_millis(1), "{diff:?}");
    }

    #[test]
    fn formats_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_036_255);
        assert_eq!(rfc3339(t), "2025-11-25T02:04:15Z");
    }

    #[test]
    fn rounds_seconds_to_tenths() {
        assert_eq!(seconds_between(0, 1_260_000_000), 1.3);
        assert_eq!(seconds_between(5, 1), 0.0);
    }
}
