//! The control socket: the only way into the running daemon. One JSON request per
//! line, one JSON response per line. The caller is identified by SO_PEERCRED.

mod client;
mod protocol;
mod refusals;
mod server;

pub use client::request;
pub use protocol::{Lifted, Request, Response, Revoke, Revoked, Who};
pub use refusals::RefusalSummary;
pub use server::{Access, Caller, ControlServer, Incoming};

pub const DEFAULT_SOCKET: &str = "/run/session-monitor/control.sock";
