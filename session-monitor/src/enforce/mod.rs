//! Enforcement: when to warn and end a session ([`deadline`]), telling the person at
//! the terminal ([`notice`]), and ending exactly the session's processes
//! ([`terminate`]).

pub mod deadline;
pub mod given;
pub mod notice;
pub mod terminate;

pub use deadline::{EndReason, Next, Timing, Warned, plan};
pub use given::GivenWarnings;
