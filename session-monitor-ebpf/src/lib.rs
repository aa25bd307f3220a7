//! Empty library target: it lets `session-monitor` declare this crate as a build
//! dependency, so cargo rebuilds the daemon when the eBPF programs change.
#![no_std]
