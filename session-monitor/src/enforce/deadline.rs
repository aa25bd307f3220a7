//! The decision of when to warn and when to end, as a pure function of the session's
//! timestamps and its limits. All instants are CLOCK_BOOTTIME nanoseconds.

use crate::policy::Limits;

crate::labels::closed_set! {
    /// Why a session ended (or is warned that it will): the audit records' `reason`,
    /// the metrics' `reason` label.
    pub enum EndReason {
        /// No user input for `idle_timeout`.
        Idle => "idle",
        /// Open for `max_session`, busy or not.
        Lifetime => "lifetime",
        /// No packet from the network peer for `network_timeout`.
        Network => "network",
        /// The user's access was revoked.
        Revoked => "revoked",
        /// The session ended by itself.
        Logout => "logout",
    }
}

impl EndReason {
    /// Whether the user is warned before this end. A vanished network peer cannot
    /// read a warning, and a revocation must not wait.
    pub fn warned(self) -> bool {
        matches!(self, EndReason::Idle | EndReason::Lifetime)
    }
}

/// A session's timestamps.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub started_ns: u64,
    pub last_input_ns: u64,
    /// Last datagram from the network peer, for sessions that have one.
    pub last_network_ns: Option<u64>,
}

/// A warning that was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warned {
    pub reason: EndReason,
    /// The end it announced.
    pub end_ns: u64,
    /// When it was given.
    pub at_ns: u64,
}

/// What happens next to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Warn {
        at_ns: u64,
        end_ns: u64,
        reason: EndReason,
    },
    End {
        at_ns: u64,
        reason: EndReason,
    },
    Never,
}

impl Next {
    pub fn at_ns(&self) -> Option<u64> {
        match self {
            Next::Warn { at_ns, .. } | Next::End { at_ns, .. } => Some(*at_ns),
            Next::Never => None,
        }
    }
}

const fn ns(d: std::time::Duration) -> u64 {
    d.as_nanos() as u64
}

/// The earliest end among the limits, and the warning before it. A user who was
/// warned always gets the full `warn_before` to react, even if the limits shrank
/// meanwhile; a warning is obsolete once input moved the idle end past what it said.
pub fn plan(limits: &Limits, timing: &Timing, warned: Option<&Warned>) -> Next {
    if limits.exempt {
        return Next::Never;
    }
    let candidates = [
        limits
            .idle_timeout
            .map(|d| (timing.last_input_ns.saturating_add(ns(d)), EndReason::Idle)),
        limits
            .max_session
            .map(|d| (timing.started_ns.saturating_add(ns(d)), EndReason::Lifetime)),
        limits
            .network_timeout
            .zip(timing.last_network_ns)
            .map(|(d, last)| (last.saturating_add(ns(d)), EndReason::Network)),
    ];
    let Some((end_ns, reason)) = candidates.into_iter().flatten().min_by_key(|(at, _)| *at) else {
        return Next::Never;
    };
    if !reason.warned() {
        return Next::End {
            at_ns: end_ns,
            reason,
        };
    }
    match warned {
        Some(w) if w.reason == reason && end_ns <= w.end_ns => Next::End {
            at_ns: end_ns.max(w.at_ns.saturating_add(ns(limits.warn_before))),
            reason,
        },
        _ => Next::Warn {
            at_ns: end_ns.saturating_sub(ns(limits.warn_before)),
            end_ns,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn limits(idle: u64, max: Option<u64>, net: Option<u64>, warn: u64) -> Limits {
        Limits {
            idle_timeout: Some(Duration::from_secs(idle)),
            max_session: max.map(Duration::from_secs),
            network_timeout: net.map(Duration::from_secs),
            warn_before: Duration::from_secs(warn),
            exempt: false,
        }
    }

    #[test]
    fn warns_then_ends_when_idle() {
        let l = limits(10, None, None, 3);
        let t = Timing {
            started_ns: 0,
            last_input_ns: 100 * S,
            last_network_ns: None,
        };
        assert_eq!(
            plan(&l, &t, None),
            Next::Warn {
                at_ns: 107 * S,
                end_ns: 110 * S,
                reason: EndReason::Idle
            }
        );
        let w = Warned {
            reason: EndReason::Idle,
            end_ns: 110 * S,
            at_ns: 107 * S,
        };
        assert_eq!(
            plan(&l, &t, Some(&w)),
            Next::End {
                at_ns: 110 * S,
                reason: EndReason::Idle
            }
        );
    }

    #[test]
    fn input_after_a_warning_makes_it_obsolete() {
        let l = limits(10, None, None, 3);
        let w = Warned {
            reason: EndReason::Idle,
            end_ns: 110 * S,
            at_ns: 107 * S,
        };
        let t = Timing {
            started_ns: 0,
            last_input_ns: 108 * S,
            last_network_ns: None,
        };
        assert_eq!(
            plan(&l, &t, Some(&w)),
            Next::Warn {
                at_ns: 115 * S,
                end_ns: 118 * S,
                reason: EndReason::Idle
            }
        );
    }

    #[test]
    fn a_late_warning_still_gives_the_full_warning_time() {
        // Discovered long idle: warned now (200 s), ended warn_before later.
        let l = limits(10, None, None, 3);
        let t = Timing {
            started_ns: 0,
            last_input_ns: 0,
            last_network_ns: None,
        };
        let w = Warned {
            reason: EndReason::Idle,
            end_ns: 10 * S,
            at_ns: 200 * S,
        };
        assert_eq!(
            plan(&l, &t, Some(&w)),
            Next::End {
                at_ns: 203 * S,
                reason: EndReason::Idle
            }
        );
    }

    #[test]
    fn lifetime_ends_busy_sessions() {
        let l = limits(10, Some(30), None, 3);
        let t = Timing {
            started_ns: 0,
            last_input_ns: 29 * S,
            last_network_ns: None,
        };
        assert_eq!(
            plan(&l, &t, None),
            Next::Warn {
                at_ns: 27 * S,
                end_ns: 30 * S,
                reason: EndReason::Lifetime
            }
        );
    }

    #[test]
    fn network_ends_without_warning() {
        let l = limits(100, None, Some(5), 3);
        let t = Timing {
            started_ns: 0,
            last_input_ns: 50 * S,
            last_network_ns: Some(10 * S),
        };
        assert_eq!(
            plan(&l, &t, None),
            Next::End {
                at_ns: 15 * S,
                reason: EndReason::Network
            }
        );
    }

    #[test]
    fn exempt_and_unlimited_sessions_never_end() {
        let mut l = limits(10, None, None, 3);
        l.exempt = true;
        let t = Timing {
            started_ns: 0,
            last_input_ns: 0,
            last_network_ns: None,
        };
        assert_eq!(plan(&l, &t, None), Next::Never);
        let l = Limits {
            idle_timeout: None,
            max_session: None,
            network_timeout: None,
            warn_before: Duration::from_secs(3),
            exempt: false,
        };
        assert_eq!(plan(&l, &t, None), Next::Never);
    }
}
