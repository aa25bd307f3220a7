//! The audit log: one JSON object per line for every session start, warning, end,
//! revocation, policy reload and daemon start/stop.
//!
//! Each record carries the SHA-256 of the line before it (`prev`) and a sequence
//! number (`seq`), so `session-monitor audit verify` finds a record that was edited,
//! removed or moved. (Like every hash chain kept on the same host, it cannot show
//! that the *last* records were cut off; ship the stdout copy to a collector for
//! that.)

mod log;
mod verify;

pub use log::{AuditLog, Fields};
pub use verify::verify_file;

pub const DEFAULT_PATH: &str = "/var/log/session-monitor/audit.jsonl";

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
