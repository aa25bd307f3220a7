//! Durations in human form: `90s`, `15m`, `2h`, `1h30m`; `none` disables a limit.

use std::time::Duration;

/// The longest limit accepted. Deadlines are kept as u64 nanoseconds of the boot
/// clock (584 years in all); a longer limit would wrap around to a short one.
pub const MAX: Duration = Duration::from_secs(100 * 31_557_600); // 100 years of 365.25 days

/// Parses a duration setting: `Ok(None)` for `none`/`off`/`never`.
pub fn parse_setting(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    if matches!(t, "none" | "off" | "never") {
        return Ok(None);
    }
    match humantime::parse_duration(t) {
        Ok(d) if d.is_zero() => Err(format!(
            "duration `{s}` is zero; use `none` to disable a limit"
        )),
        Ok(d) if d > MAX => Err(format!(
            "duration `{s}` is longer than 100 years; use `none` for no limit"
        )),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "invalid duration `{s}` ({e}); write e.g. `90s`, `15m`, `2h` or `none`"
        )),
    }
}

/// `15m`, `1h30m`, `none`.
pub fn format(d: Option<Duration>) -> String {
    match d {
        None => "none".into(),
        Some(d) => humantime::format_duration(d).to_string().replace(' ', ""),
    }
}

/// Serializes limits as human strings in `explain --json`.
pub mod serde_opt {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }
}

pub mod serde_req {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(Some(*d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(parse_setting("90s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_setting("15m").unwrap(),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            parse_setting("1h30m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(parse_setting("none").unwrap(), None);
        assert!(parse_setting("15 minutes please").is_err());
        assert!(parse_setting("0s").is_err());
        // Would wrap around as nanoseconds (u64) to about 15 years... or 1 second.
        let e = parse_setting("584y 200d").unwrap_err();
        assert!(e.contains("longer than 100 years"), "{e}");
        assert_eq!(parse_setting("100y").unwrap(), Some(MAX));
        assert_eq!(format(Some(Duration::from_secs(5400))), "1h30m");
    }
}
