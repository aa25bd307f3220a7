//! The audit log: one JSON object per line for every session start, warning, end,
//! revocation, policy reload and daemon start/stop.
//!
//! Each record carries the SHA-256 of the line before it (`prev`) and a sequence
//! number (`seq`), so `session-monitor audit verify` finds a record that was edited,
//! removed or moved. The chain runs on across rotated files: the first record of a
//! new file carries the hash of the last record of the one before. (Like every hash
//! chain kept on the same host, it cannot show that the *last* records were cut off;
//! ship the stdout copy to a collector for that.)
//!
//! | file | concern |
//! | --- | --- |
//! | `event.rs` | [`AuditEvent`]: every kind of record and its fields |
//! | `file.rs` | the file: one `write()` per record, torn-tail repair, shrink detection, size rotation |
//! | `log.rs` | [`AuditLog`]: the chain, and records lost to write failures (`gap`) |
//! | `verify.rs` | `audit verify FILE...` over a rotated set |

mod event;
mod file;
mod log;
mod verify;

pub use event::{AuditEvent, BlockedIn, Ended, ReloadOutcome, RevokedBy, SessionFields};
pub use log::{AuditLog, Rotation};
pub use verify::verify_files;

pub const DEFAULT_PATH: &str = "/var/log/session-monitor/audit.jsonl";

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
