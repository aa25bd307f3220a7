//! Appending records: the hash chain, and what happens when the file cannot be
//! written (nothing advances; a `gap` record says what was lost once writing works
//! again).

use std::{collections::VecDeque, path::Path, time::SystemTime};

use anyhow::Result;
use prometheus_client::metrics::counter::Counter;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::{
    GENESIS,
    event::AuditEvent,
    file::{LogFile, Repair, last_line_of_previous},
};
use crate::{clock, control::RefusalSummary, metrics::Health};

/// The fields of one record besides `seq`, `time` and `prev`.
type Fields = Map<String, Value>;

/// Built-in size rotation (policy `audit_max_size`, `audit_keep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: u64,
    pub keep: u32,
}

/// Records that could not be written, for the `gap` record.
struct Lost {
    count: u64,
    since: SystemTime,
    error: String,
}

pub struct AuditLog {
    file: LogFile,
    prev: String,
    seq: u64,
    stdout: bool,
    rotation: Option<Rotation>,
    /// Records about the log itself (repaired, reopened, shrunk, rotated), written
    /// before the next record.
    notices: VecDeque<AuditEvent>,
    lost: Option<Lost>,
    write_errors: Counter,
    health: Health,
}

/// Escapes characters that could rewrite a terminal or hide text when the log is
/// read (control characters, including DEL and C1, and bidirectional overrides).
/// JSON escaping alone leaves DEL, C1 and bidi characters as they are.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn hash_line(line: &[u8]) -> String {
    format!("{:x}", Sha256::digest(line))
}

impl AuditLog {
    /// Opens the file and continues its chain (or, when it is empty, the chain of
    /// `FILE.1`, the file it was rotated to). A torn last line is cut off, and the
    /// cut is the first record written.
    pub fn open(path: &Path, stdout: bool) -> Result<Self> {
        let (file, repair, last) = LogFile::open(path)?;
        let last = last.or_else(|| last_line_of_previous(path));
        let (prev, seq) = chain_state(last.as_deref());
        let mut log = Self {
            file,
            prev,
            seq,
            stdout,
            rotation: None,
            notices: VecDeque::new(),
            lost: None,
            write_errors: Counter::default(),
            health: Health::new(),
        };
        if let Some(repair) = repair {
            log.notice_repair(&repair);
        }
        log.flush_notices();
        Ok(log)
    }

    /// Counts failed writes in `write_errors` and reports them on `health`.
    pub fn observed_by(mut self, write_errors: Counter, health: Health) -> Self {
        // What failed while opening (the repair record on a full disk) counts too.
        write_errors.inc_by(self.write_errors.get());
        if self.lost.is_some() {
            health.set_audit_degraded(self.health.audit_degraded());
        }
        self.write_errors = write_errors;
        self.health = health;
        self
    }

    /// Rotates by size from now on (`None`: never).
    pub fn set_rotation(&mut self, rotation: Option<Rotation>) {
        self.rotation = rotation;
    }

    pub fn path(&self) -> Option<&Path> {
        Some(self.file.path())
    }

    /// Reopens the file by its path (SIGUSR1, after logrotate moved it away); the
    /// chain goes on in the new file. On failure the old descriptor is kept.
    pub fn reopen(&mut self) {
        let path = self.file.path().to_path_buf();
        match LogFile::open(&path) {
            Ok((file, repair, _)) => {
                self.file = file;
                if let Some(repair) = repair {
                    self.notice_repair(&repair);
                }
                self.notices.push_back(AuditEvent::AuditReopened {
                    file: path.display().to_string(),
                });
                tracing::info!(file = %path.display(), "audit log reopened");
                self.flush_notices();
            }
            Err(err) => {
                tracing::error!("cannot reopen the audit log; writing on to the old file: {err:#}")
            }
        }
    }

    #[cfg(test)]
    pub fn break_writes_for_test(&mut self) {
        self.file.break_writes_for_test();
    }

    /// Appends one record. Failures are counted and logged, never fatal: losing the
    /// audit file must not stop enforcement. A record that is not written does not
    /// advance `seq` or `prev`.
    pub fn record(&mut self, event: AuditEvent) {
        self.prepare();
        let written = self
            .write_lost_and_notices()
            .and_then(|()| self.append(&event));
        if let Err(error) = written {
            let line = fields(&event).and_then(|f| encode(self.seq + 1, &f, &self.prev));
            self.lose(line.as_deref().unwrap_or(event.name().as_str()), error);
        }
    }

    /// The further refusals of one caller in an interval, as one record.
    pub fn record_refusals(&mut self, summary: &RefusalSummary) {
        self.record(AuditEvent::ControlRefusedSummary {
            caller_uid: summary.uid,
            refused: summary.count,
            seconds: summary.seconds,
            last_error: summary.last_error.clone(),
            summary: summary.describe(),
        });
    }

    fn notice_repair(&mut self, repair: &Repair) {
        tracing::warn!(
            bytes = repair.removed_bytes,
            "audit log ended in a torn line (a write cut short); cut it off"
        );
        self.notices.push_back(AuditEvent::AuditRepaired {
            removed_bytes: repair.removed_bytes,
            removed: repair.removed.clone(),
        });
    }

    /// Notices what happened to the file since the last write.
    fn prepare(&mut self) {
        if let Some((before, now)) = self.file.shrank() {
            tracing::warn!(
                before,
                now,
                "the audit log shrank under the daemon (copytruncate?)"
            );
            self.notices.push_back(AuditEvent::AuditTruncated {
                size_before: before,
                size_after: now,
                note: "the file shrank under the daemon (logrotate copytruncate, or someone cut it); the records before this one are in the copy",
            });
        }
    }

    fn flush_notices(&mut self) {
        let _ = self.write_lost_and_notices();
    }

    /// The `gap` record for what was lost, then the notices about the file.
    fn write_lost_and_notices(&mut self) -> Result<(), String> {
        if let Some(lost) = &self.lost {
            let gap = AuditEvent::Gap {
                lost_records: lost.count,
                since: clock::rfc3339(lost.since),
                error: lost.error.clone(),
            };
            self.append(&gap)?;
            let lost = self.lost.take().map_or(0, |l| l.count);
            tracing::warn!(lost, "audit log writable again; recorded the gap");
            self.health.set_audit_degraded(None);
        }
        while let Some(notice) = self.notices.pop_front() {
            if let Err(err) = self.append(&notice) {
                self.notices.push_front(notice);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Encodes and writes one record; the chain advances only when it is written.
    /// With size rotation, a record that would take the file past `max_size` goes
    /// into a new file, after an `audit_rotated` record.
    fn append(&mut self, event: &AuditEvent) -> Result<(), String> {
        let fields = fields(event).ok_or_else(|| "cannot encode the record".to_string())?;
        let mut line = encode(self.seq + 1, &fields, &self.prev)
            .ok_or_else(|| "cannot encode the record".to_string())?;
        if let Some(rotation) = self.rotation
            && self.file.size() > 0
            && self.file.size() + line.len() as u64 + 1 > rotation.max_size
        {
            self.rotate(rotation)?;
            line = encode(self.seq + 1, &fields, &self.prev)
                .ok_or_else(|| "cannot encode the record".to_string())?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file.append(&bytes).map_err(|e| e.to_string())?;
        if self.stdout {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
        self.prev = hash_line(line.as_bytes());
        self.seq += 1;
        Ok(())
    }

    /// Renames the set and starts the new file with an `audit_rotated` record. A
    /// rename that fails leaves the records going into the current file.
    fn rotate(&mut self, rotation: Rotation) -> Result<(), String> {
        match self.file.rotate(rotation.keep) {
            Ok(old) => {
                let notice = AuditEvent::AuditRotated {
                    previous_file: old.display().to_string(),
                    max_size: rotation.max_size,
                    keep: rotation.keep,
                };
                // The new file is empty: this append does not rotate again.
                self.append(&notice)
            }
            Err(err) => {
                tracing::error!("cannot rotate the audit log: {err:#}");
                Ok(())
            }
        }
    }

    fn lose(&mut self, line: &str, error: String) {
        self.write_errors.inc();
        // The record is not lost entirely: the daemon's own log keeps it.
        tracing::error!("cannot write the audit log ({error}); record not written: {line}");
        let lost = self.lost.get_or_insert_with(|| Lost {
            count: 0,
            since: SystemTime::now(),
            error: error.clone(),
        });
        lost.count += 1;
        lost.error = error;
        self.health.set_audit_degraded(Some(format!(
            "audit log {} not writable since {} ({}; {} records not written)",
            self.file.path().display(),
            clock::rfc3339(lost.since),
            lost.error,
            lost.count
        )));
    }
}

/// The event's fields, `event` among them, as JSON values.
fn fields(event: &AuditEvent) -> Option<Fields> {
    match serde_json::to_value(event) {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            tracing::error!("audit record is not an object: {other}");
            None
        }
        Err(err) => {
            tracing::error!("cannot encode audit record: {err}");
            None
        }
    }
}

/// One record as a line (without the newline): `seq`, `time`, the event's fields
/// (escaped) and `prev`, keys in sorted order (serde_json's map without
/// `preserve_order`; `a_record_is_one_line_of_sorted_keys` pins it).
fn encode(seq: u64, fields: &Fields, prev: &str) -> Option<String> {
    let mut record = Map::new();
    record.insert("seq".into(), Value::from(seq));
    record.insert(
        "time".into(),
        Value::from(clock::rfc3339(SystemTime::now())),
    );
    for (k, v) in fields {
        record.insert(k.clone(), sanitize(v.clone()));
    }
    record.insert("prev".into(), Value::from(prev));
    match serde_json::to_string(&Value::Object(record)) {
        Ok(line) => Some(line),
        Err(err) => {
            tracing::error!("cannot encode audit record: {err}");
            None
        }
    }
}

fn sanitize(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(clean(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(sanitize).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (clean(&k), sanitize(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Hash and sequence number of the record the chain continues from.
fn chain_state(last: Option<&str>) -> (String, u64) {
    match last {
        None => (GENESIS.to_string(), 0),
        Some(line) => {
            let seq = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64))
                .unwrap_or(0);
            (hash_line(line.as_bytes()), seq)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_does_not() {
        assert_eq!(
            clean("a\u{7f}b\u{9b}c\u{202e}d"),
            "a\\u{7f}b\\u{9b}c\\u{202e}d"
        );
        assert_eq!(clean("plain ünïcode"), "plain ünïcode");
        assert_eq!(clean("esc\u{1b}[2J"), "esc\\u{1b}[2J");
    }

    /// The line as `audit verify` and collectors read it: keys sorted, the event's
    /// own fields (flattened ones included) beside `seq`, `time`, `event` and `prev`.
    #[test]
    fn a_record_is_one_line_of_sorted_keys() {
        let event = AuditEvent::PolicyReload {
            file: "/etc/session-monitor/policy.toml".into(),
            outcome: crate::audit::ReloadOutcome::Ok {
                sha256: "ab".into(),
                mode: crate::policy::Mode::DryRun,
                rules: 2,
            },
        };
        let line = encode(7, &fields(&event).unwrap(), GENESIS).unwrap();
        let (head, rest) = line.split_once(r#""time":""#).unwrap();
        let (_, tail) = rest.split_once('"').unwrap();
        assert_eq!(
            format!("{head}{tail}"),
            format!(
                r#"{{"event":"policy_reload","file":"/etc/session-monitor/policy.toml","mode":"dry-run","prev":"{GENESIS}","result":"ok","rules":2,"seq":7,"sha256":"ab",}}"#
            )
        );
    }
}
