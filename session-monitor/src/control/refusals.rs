//! Refused and malformed control requests, summarised per caller uid and interval:
//! the first refusal of a uid is reported on its own, the rest of its interval as one
//! count. A caller flooding the socket thus adds at most one audit record per
//! interval, however many connections it makes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// How long refusals of one uid are counted before they are reported together.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Refusals of one uid counted over `seconds`.
#[derive(Clone, Debug, PartialEq)]
pub struct RefusalSummary {
    pub uid: u32,
    pub count: u64,
    pub seconds: f64,
    /// The reason of the last refusal counted.
    pub last_error: String,
}

impl RefusalSummary {
    /// "uid 1001: 36,709 refused requests in 5 s".
    pub fn describe(&self) -> String {
        format!(
            "uid {}: {} refused requests in {} s",
            self.uid,
            thousands(self.count),
            self.seconds.round()
        )
    }
}

struct Window {
    start: Instant,
    count: u64,
    last_error: String,
}

#[derive(Default)]
pub struct Refusals {
    windows: HashMap<u32, Window>,
}

impl Refusals {
    /// Counts a refusal; `true` when it is the first of its uid's interval and is to
    /// be reported on its own now.
    pub fn note(&mut self, uid: u32, reason: &str, now: Instant) -> bool {
        match self.windows.get_mut(&uid) {
            Some(window) => {
                window.count += 1;
                if window.last_error != reason {
                    window.last_error = reason.to_string();
                }
                false
            }
            None => {
                self.windows.insert(
                    uid,
                    Window {
                        start: now,
                        count: 0,
                        last_error: reason.to_string(),
                    },
                );
                true
            }
        }
    }

    /// Summaries of the intervals that are over. A uid that was refused again in
    /// its interval starts a new one (still counted, not reported one by one); a uid
    /// that was quiet is forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<RefusalSummary> {
        let mut out = Vec::new();
        self.windows.retain(|&uid, window| {
            let elapsed = now.duration_since(window.start);
            if elapsed < INTERVAL {
                return true;
            }
            if window.count == 0 {
                return false;
            }
            out.push(RefusalSummary {
                uid,
                count: window.count,
                seconds: elapsed.as_secs_f64(),
                last_error: window.last_error.clone(),
            });
            window.start = now;
            window.count = 0;
            true
        });
        out.sort_by_key(|s| s.uid);
        out
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_record_per_interval() {
        let mut refusals = Refusals::default();
        let t0 = Instant::now();
        assert!(refusals.note(1001, "permission denied", t0));
        for i in 0..36_709u64 {
            assert!(!refusals.note(1001, "permission denied", t0 + Duration::from_micros(i)));
        }
        // Another caller is reported on its own.
        assert!(refusals.note(1002, "malformed request", t0));
        assert!(refusals.due(t0 + Duration::from_secs(1)).is_empty());
        let due = refusals.due(t0 + INTERVAL);
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(
            due[0].describe(),
            "uid 1001: 36,709 refused requests in 5 s"
        );
        // Still flooding: counted into the next interval, not reported singly.
        assert!(!refusals.note(1001, "permission denied", t0 + INTERVAL));
        assert_eq!(refusals.due(t0 + INTERVAL * 2)[0].count, 1);
        // Quiet for an interval: forgotten, and the next refusal is reported at once.
        assert!(refusals.due(t0 + INTERVAL * 3).is_empty());
        assert!(refusals.note(1001, "permission denied", t0 + INTERVAL * 3));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
