//! `cargo xtask package`: a Debian package for nodes outside Kubernetes, staged as
//! a directory tree and built with `dpkg-deb --build` (no network, no extra tools):
//! the binary, the systemd unit, the dry-run policy, the logrotate snippet, and man
//! pages and shell completions generated from the binary's own command line.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{
    build,
    cmd::{self, step},
    setup::{self, Purpose},
};

const NAME: &str = "session-monitor";

pub struct Options {
    /// Package this binary instead of building the release one.
    pub binary: Option<PathBuf>,
    /// Where to write the .deb (default: target/package).
    pub out: Option<PathBuf>,
}

/// What goes where: (source in the repository, path in the package, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "deploy/systemd/session-monitor.service",
        "lib/systemd/system/session-monitor.service",
        0o644,
    ),
    (
        "deploy/debian/policy.toml",
        "etc/session-monitor/policy.toml",
        0o644,
    ),
    (
        "deploy/logrotate/session-monitor",
        "etc/logrotate.d/session-monitor",
        0o644,
    ),
];

/// Files dpkg keeps the administrator's version of on upgrades.
const CONFFILES: &[&str] = &[
    "/etc/session-monitor/policy.toml",
    "/etc/logrotate.d/session-monitor",
];

pub fn package(opts: &Options) -> Result<PathBuf> {
    let binary = match &opts.binary {
        Some(binary) => binary.clone(),
        None => {
            setup::setup(Purpose::Run)?;
            build::build_daemon(true)?
        }
    };
    let root = cmd::workspace_root();
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/package"));
    let version = env!("CARGO_PKG_VERSION");
    let arch = cmd::stdout_if_ok(Command::new("dpkg").arg("--print-architecture"))
        .map(|a| a.trim().to_string())
        .context("dpkg --print-architecture (this builds Debian packages on Debian)")?;
    let stage = out.join(format!("{NAME}_{version}_{arch}"));
    step(format!("staging {}", stage.display()));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }

    install(&binary, &stage.join("usr/sbin/session-monitor"), 0o755)?;
    for (source, target, mode) in FILES {
        install(&root.join(source), &stage.join(target), *mode)?;
    }
    docs(&binary, &stage)?;
    control(&stage, version, &arch, &binary)?;

    fs::create_dir_all(&out)?;
    let deb = out.join(format!("{NAME}_{version}_{arch}.deb"));
    cmd::run(
        "dpkg-deb --build",
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zgzip"])
            .arg(&stage)
            .arg(&deb),
    )?;
    println!("    {}", deb.display());
    Ok(deb)
}

fn install(source: &Path, target: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(source, target)
        .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Man pages (gzipped, as Debian ships them) and completions, from
/// `session-monitor generate-docs`.
fn docs(binary: &Path, stage: &Path) -> Result<()> {
    let generated = stage.with_extension("docs");
    if generated.exists() {
        fs::remove_dir_all(&generated)?;
    }
    cmd::run(
        "generating man pages and completions",
        Command::new(binary).arg("generate-docs").arg(&generated),
    )?;
    let man = stage.join("usr/share/man/man1");
    fs::create_dir_all(&man)?;
    for entry in fs::read_dir(generated.join("man"))? {
        let page = entry?.path();
        let target = man.join(page.file_name().context("page name")?);
        install(&page, &target, 0o644)?;
        cmd::run(
            "gzip",
            Command::new("gzip").args(["-9n", "-f"]).arg(&target),
        )?;
    }
    let completions = generated.join("completions");
    for (file, target) in [
        (
            "session-monitor.bash",
            "usr/share/bash-completion/completions/session-monitor",
        ),
        (
            "_session-monitor",
            "usr/share/zsh/vendor-completions/_session-monitor",
        ),
        (
            "session-monitor.fish",
            "usr/share/fish/vendor_completions.d/session-monitor.fish",
        ),
    ] {
        install(&completions.join(file), &stage.join(target), 0o644)?;
    }
    fs::remove_dir_all(&generated)?;
    Ok(())
}

fn control(stage: &Path, version: &str, arch: &str, binary: &Path) -> Result<()> {
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let glibc = glibc_needed(&fs::read(binary)?)
        .map(|(major, minor)| format!("libc6 (>= {major}.{minor})"))
        .unwrap_or_else(|| "libc6".into());
    let size_kib = du_kib(stage)?;
    fs::write(
        debian.join("control"),
        format!(
            "Package: {NAME}\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: session-monitor developers <root@localhost>\n\
             Installed-Size: {size_kib}\n\
             Depends: {glibc}, libgcc-s1, procps\n\
             Recommends: logrotate\n\
             Section: admin\n\
             Priority: optional\n\
             Description: ends idle and revoked interactive sessions, decided with eBPF\n \
             A root daemon that watches SSH, Mosh, console, container and local terminal\n \
             sessions from the kernel (eBPF) and ends those idle or revoked by policy.\n \
             Installed in dry-run mode: see /etc/session-monitor/policy.toml.\n"
        ),
    )?;
    fs::write(
        debian.join("conffiles"),
        CONFFILES
            .iter()
            .map(|f| format!("{f}\n"))
            .collect::<String>(),
    )?;
    for (name, script) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        let path = debian.join(name);
        fs::write(&path, script)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Enables and (re)starts the service where systemd runs; a chroot or container
/// without systemd just gets the files.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    install -d -m 0700 /var/log/session-monitor /var/lib/session-monitor
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl enable session-monitor.service || true
        systemctl restart session-monitor.service || true
    fi
fi
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop session-monitor.service || true
    systemctl disable session-monitor.service || true
fi
"#;

/// The audit log stays on purge: it is evidence. Revocations, warnings and the
/// pinned kernel state go.
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/session-monitor /sys/fs/bpf/session-monitor
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
"#;

/// The newest `GLIBC_2.N` symbol version the binary refers to.
fn glibc_needed(binary: &[u8]) -> Option<(u32, u32)> {
    let marker = b"GLIBC_2.";
    let mut best = None;
    let mut at = 0;
    while let Some(pos) = binary[at..].windows(marker.len()).position(|w| w == marker) {
        let start = at + pos + marker.len();
        let digits: String = binary[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        if let Ok(minor) = digits.parse::<u32>() {
            best = best.max(Some((2, minor)));
        }
        at = start;
    }
    best
}

fn du_kib(dir: &Path) -> Result<u64> {
    fn bytes(dir: &Path) -> Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            total += if meta.is_dir() {
                bytes(&entry.path())?
            } else {
                meta.len()
            };
        }
        Ok(total)
    }
    Ok(bytes(dir)?.div_ceil(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_glibc_version_referenced() {
        let bytes = b"\0GLIBC_2.2.5\0GLIBC_2.34\0xGLIBC_2.17\0GLIBC_PRIVATE\0";
        assert_eq!(glibc_needed(bytes), Some((2, 34)));
        assert_eq!(glibc_needed(b"nothing"), None);
    }
}
