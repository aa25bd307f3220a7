//! `cargo xtask run`: set up, build in release mode, then become the daemon.

use std::os::unix::process::CommandExt as _;

use anyhow::{Result, bail};

use crate::{
    build,
    cmd::{self, step},
    setup::{self, Purpose},
};

/// Replaces this process with `session-monitor run ARGS...`, so that Ctrl-C and
/// SIGTERM reach the daemon itself and it can detach its probes cleanly.
pub fn run(args: &[String]) -> Result<()> {
    setup::setup(Purpose::Run)?;
    let daemon = build::build_daemon(true)?;
    let mut command = std::process::Command::new(&daemon);
    command.arg("run").args(args);
    step(format!("exec {}", cmd::display(&command)));
    let err = command.exec();
    bail!("cannot exec {}: {err}", daemon.display())
}
