//! Polling until something is true, with failure messages that say what was awaited
//! and what was last seen. Bounds are generous: the CI machines have two cores.

use std::{
    fmt::Display,
    thread,
    time::{Duration, Instant},
};

/// How often conditions are checked unless told otherwise.
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// A wait for a condition, configured step by step:
///
/// ```no_run
/// # use std::time::Duration;
/// let pid = harness::Wait::new("sshd to write its pid file")
///     .timeout(Duration::from_secs(10))
///     .poll(Duration::from_millis(50))
///     .until(|| std::fs::read_to_string("/tmp/sshd.pid").ok());
/// ```
#[derive(Clone, Debug)]
pub struct Wait {
    what: String,
    timeout: Duration,
    poll: Duration,
}

impl Wait {
    /// `what` completes "timed out after N s waiting for ...".
    pub fn new(what: impl Display) -> Self {
        Self {
            what: what.to_string(),
            timeout: Duration::from_secs(10),
            poll: DEFAULT_POLL,
        }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Calls `check` until it returns `Some`, and returns that; panics at the timeout.
    pub fn until<T>(self, mut check: impl FnMut() -> Option<T>) -> T {
        self.until_ok(|| check().ok_or("condition not met"))
    }

    /// Calls `check` until it returns `Ok`, and returns that; panics at the timeout
    /// with the last error, which should say what was seen instead.
    pub fn until_ok<T, E: Display>(self, check: impl FnMut() -> Result<T, E>) -> T {
        match self.try_until_ok(check) {
            Ok(value) => value,
            Err(message) => panic!("{message}"),
        }
    }

    /// Like [`Wait::until_ok`], but returns the failure message instead of panicking.
    pub fn try_until_ok<T, E: Display>(
        self,
        mut check: impl FnMut() -> Result<T, E>,
    ) -> Result<T, String> {
        let started = Instant::now();
        loop {
            let last = match check() {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if started.elapsed() >= self.timeout {
                return Err(format!(
                    "timed out after {:.1} s waiting for {}; last seen: {last}",
                    started.elapsed().as_secs_f64(),
                    self.what
                ));
            }
            thread::sleep(self.poll);
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`; panics after `timeout`.
pub fn wait_until<T>(what: impl Display, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    Wait::new(what).timeout(timeout).until(check)
}

/// Polls `check` every 100 ms until it returns `Ok`; panics after `timeout` with the
/// last error.
pub fn wait_until_ok<T, E: Display>(
    what: impl Display,
    timeout: Duration,
    check: impl FnMut() -> Result<T, E>,
) -> T {
    Wait::new(what).timeout(timeout).until_ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let got = Wait::new("n to reach 3")
            .poll(Duration::from_millis(1))
            .until(|| {
                n += 1;
                (n >= 3).then_some(n)
            });
        assert_eq!(got, 3);
    }

    #[test]
    fn says_what_it_waited_for_and_what_it_saw() {
        let err = Wait::new("the impossible")
            .timeout(Duration::from_millis(30))
            .poll(Duration::from_millis(5))
            .try_until_ok(|| Err::<(), _>("still possible"))
            .unwrap_err();
        assert!(err.contains("waiting for the impossible"), "{err}");
        assert!(err.contains("last seen: still possible"), "{err}");
    }
}
