//! Reading what libtest prints: `test NAME ... FAILED` for a failed test, and one
//! `test result: ok. 3 passed; 0 failed; 1 ignored; ...` summary per test binary.
//! `cargo xtask test` reads it from `cargo test`, `vm-test` from the VM's output.

/// Counts summed over the test binaries whose output was read.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    /// Adds what one line of libtest output reports; returns the test's name if the
    /// line reports a failed test.
    pub fn read_line<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            return Some(name);
        }
        let summary = line.strip_prefix("test result: ")?;
        for part in summary.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_summaries_and_names_failures() {
        let mut counts = Counts::default();
        let mut failures = Vec::new();
        for line in [
            "running 3 tests",
            "test ssh_session_from_login_to_logout ... ok",
            "test mosh::liveness ... FAILED",
            "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.00s",
            "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "failures:",
            "    mosh::liveness",
        ] {
            failures.extend(counts.read_line(line));
        }
        assert_eq!(
            counts,
            Counts {
                passed: 5,
                failed: 1,
                ignored: 1
            }
        );
        assert_eq!(failures, ["mosh::liveness"]);
    }
}
