//! `cargo xtask build`: builds the daemon. Its own build script builds the eBPF crate
//! with nightly and bpf-linker, which the set-up installed.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

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
    // Diagnostics still reach the terminal (rendered on stderr); stdout carries the
    // artifact messages we read the binary's path from.
    command
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    println!("    $ {}", cmd::display(&command));
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::display(&command)))?;
    let mut executable = None;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let is_daemon = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == DAEMON_PACKAGE
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if let (true, Some(path)) = (is_daemon, message["executable"].as_str()) {
            executable = Some(PathBuf::from(path));
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("building {DAEMON_PACKAGE} failed ({status})");
    }
    let executable =
        executable.with_context(|| format!("cargo did not report the {DAEMON_PACKAGE} binary"))?;
    println!("    built {}", executable.display());
    Ok(executable)
}
