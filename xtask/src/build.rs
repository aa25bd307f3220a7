//! `cargo xtask build`: builds the daemon. Its own build script builds the eBPF crate
//! with nightly and bpf-linker, which the set-up installed.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::cmd::{self, step};

const DAEMON_PACKAGE: &str = "session-monitor";

/// Builds the daemon and returns the absolute path of its binary, as cargo reports it
/// (so that `CARGO_TARGET_DIR` and profiles are honoured).
pub fn build_daemon(release: bool) -> Result<PathBuf> {
    step(format!(
        "building {DAEMON_PACKAGE} ({})",
        if release { "release" } else { "debug" }
    ));
    let mut command = cmd::cargo();
    command.args(["build", "--package", DAEMON_PACKAGE]);
    if release {
        command.arg("--release");
    }
    let executable = cmd::cargo_artifacts(&format!("building {DAEMON_PACKAGE}"), &mut command)?
        .into_iter()
        .filter(|a| a.target.name == DAEMON_PACKAGE && a.target.is_bin())
        .find_map(|a| a.executable)
        .with_context(|| format!("cargo did not report the {DAEMON_PACKAGE} binary"))?;
    println!("    built {executable}");
    Ok(executable.into())
}
