//! session-monitor's daemon as a library: everything but the command-line client.
//!
//! The binary (`main.rs`) is the CLI over these modules; the probe-level tests
//! (`tests/probes.rs`) load the probes through the same loader the daemon uses.

pub mod audit;
pub mod clock;
pub mod control;
pub mod daemon;
pub mod enforce;
pub mod labels;
pub mod metrics;
pub mod policy;
pub mod preflight;
pub mod probes;
pub mod revoke;
pub mod sessions;
