//! Debian packages: what a task needs is installed with apt-get unless dpkg already
//! reports it installed. The set-up, the VM runner and the benchmark share this, so
//! that every task installs, and fails, the same way.

use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd::{self, done_already};

/// Installs those of `packages` that are not installed, with one `apt-get update` and
/// one `apt-get install`, and checks that they are installed afterwards. The caller
/// announces the step; this prints what it found and what it ran.
pub fn install_missing(packages: &[&str]) -> Result<()> {
    if cmd::find_program("dpkg", &[]).is_none() {
        bail!(
            "Debian packages: dpkg not found; this set-up supports Debian 12 only. Install \
             these packages (or their equivalents) by hand: {}",
            packages.join(" ")
        );
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !installed(package))
        .collect();
    if missing.is_empty() {
        done_already("all installed");
        return Ok(());
    }
    println!("    missing: {}", missing.join(" "));
    if !cmd::is_root() {
        bail!(
            "installing the Debian packages {}: needs root; run `cargo xtask` as root \
             (e.g. `sudo -E cargo xtask ...`)",
            missing.join(" ")
        );
    }
    update()?;
    cmd::run(
        &format!("installing {}", missing.join(" ")),
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still: Vec<&str> = missing
        .into_iter()
        .filter(|package| !installed(package))
        .collect();
    if !still.is_empty() {
        bail!(
            "Debian packages still not installed after apt-get install: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// Refreshes the package lists (`apt-get update`).
pub fn update() -> Result<()> {
    cmd::run("apt-get update", apt_get().arg("update"))
}

/// `apt-get`, never asking questions.
pub fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

/// True when dpkg says the package is installed (not just known or half-configured).
pub fn installed(package: &str) -> bool {
    cmd::stdout_if_ok(Command::new("dpkg").args(["-s", package])).is_some_and(|out| {
        out.lines()
            .any(|l| l.trim() == "Status: install ok installed")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_installed_packages_from_unknown_ones() {
        // dpkg itself is installed on every Debian system, the only one supported.
        assert!(installed("dpkg"));
        assert!(!installed("session-monitor-no-such-package"));
    }
}
