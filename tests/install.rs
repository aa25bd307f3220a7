//! The node install path: the Debian package installed into a fresh Debian root,
//! its systemd unit, the notify/watchdog protocol the unit relies on, and a policy
//! directory that appears after the daemon started.

use std::{
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use harness::{Daemon, TempDir, UNLIMITED_POLICY, Wait, daemon_binary, process, test_guard};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The Debian mirror apt uses here (`URIs:` of a deb822 `.sources` file, or a
/// `deb URI bookworm ...` line), for debootstrap.
fn debian_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let name = file.to_string_lossy().to_string();
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
                };
                if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
                    && suites.split_whitespace().any(|s| s == "bookworm")
                    && let Some(uri) = uris.split_whitespace().next()
                {
                    return uri.to_string();
                }
            }
        } else if name.ends_with(".list") || name.ends_with("sources.list") {
            for line in text.lines() {
                let words: Vec<&str> = line
                    .split_whitespace()
                    .filter(|w| !w.starts_with('['))
                    .collect();
                if words.len() >= 3 && words[0] == "deb" && words[2] == "bookworm" {
                    return words[1].to_string();
                }
            }
        }
    }
    panic!("no Debian bookworm mirror in /etc/apt/sources.list*");
}

/// A fresh Debian 12 root (minbase, plus systemd so that `systemd-analyze --root`
/// finds its targets), made once under target/ and reused.
fn debian_root() -> PathBuf {
    let dir = workspace().join("target/debootstrap");
    let root = dir.join("bookworm");
    if root.join("usr/bin/dpkg").exists() {
        return root;
    }
    let partial = dir.join("bookworm.partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let out = process::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd,procps", "bookworm"])
            .arg(&partial)
            .arg(debian_mirror()),
    );
    assert!(
        out.status.success(),
        "debootstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&partial, &root).unwrap();
    eprintln!("debootstrap: {:?}", started.elapsed());
    root
}

/// The cached root under a writable overlay, unmounted when dropped: installing
/// into it leaves the cache fresh.
struct Overlay {
    dir: TempDir,
}

impl Overlay {
    fn over(lower: &Path) -> Self {
        let dir = TempDir::new("overlay");
        for sub in ["upper", "work", "root"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let out = process::run(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &options])
                .arg(dir.join("root")),
        );
        assert!(
            out.status.success(),
            "mount overlay: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Runs a command chrooted into the root; returns its stdout, panicking on failure.
    fn chroot(&self, args: &[&str]) -> String {
        let out = process::run(Command::new("chroot").arg(self.root()).args(args));
        assert!(
            out.status.success(),
            "chroot {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.root()).status();
    }
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_package_installs_into_a_fresh_debian_root_where_its_unit_expects_its_files() {
    let _guard = test_guard!();
    let lower = debian_root();
    let out = TempDir::new("package");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = process::run(
        Command::new(cargo)
            .current_dir(workspace())
            .args(["xtask", "package", "--binary"])
            .arg(daemon_binary())
            .arg("--out")
            .arg(out.path()),
    );
    assert!(
        built.status.success(),
        "cargo xtask package: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");

    let overlay = Overlay::over(&lower);
    let root = overlay.root();
    std::fs::copy(&deb, root.join("tmp/session-monitor.deb")).unwrap();
    overlay.chroot(&["dpkg", "-i", "/tmp/session-monitor.deb"]);
    let status = overlay.chroot(&[
        "dpkg-query",
        "-W",
        "-f=${Status} ${Conffiles}",
        "session-monitor",
    ]);
    assert!(status.starts_with("install ok installed"), "{status}");
    assert!(
        status.contains("/etc/session-monitor/policy.toml"),
        "{status}"
    );

    // The unit's files are where it expects them.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/session-monitor.service"))
        .expect("the unit is installed");
    let exec = unit_value(&unit, "ExecStart")[0];
    let words: Vec<&str> = exec.split_whitespace().collect();
    let binary = root.join(words[0].trim_start_matches('/'));
    let mode = std::fs::metadata(&binary)
        .expect("ExecStart's binary")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "{} is not executable",
        binary.display()
    );
    let config = words
        .iter()
        .position(|w| *w == "--config")
        .map(|i| words[i + 1])
        .expect("ExecStart names the policy");
    let checked = overlay.chroot(&[words[0], "check-config", config]);
    assert!(
        checked.contains("mode DryRun"),
        "the installed policy must start in dry-run: {checked}"
    );
    let version = overlay.chroot(&[words[0], "--version"]);
    assert!(version.starts_with("session-monitor "), "{version}");
    for reload in unit_value(&unit, "ExecReload") {
        let program = reload.split_whitespace().next().unwrap();
        assert!(
            root.join(program.trim_start_matches('/')).exists(),
            "{program} missing"
        );
    }
    for file in [
        "usr/share/man/man1/session-monitor.1.gz",
        "usr/share/man/man1/session-monitor-run.1.gz",
        "usr/share/man/man1/session-monitor-audit-verify.1.gz",
        "usr/share/bash-completion/completions/session-monitor",
        "usr/share/zsh/vendor-completions/_session-monitor",
        "usr/share/fish/vendor_completions.d/session-monitor.fish",
        "etc/logrotate.d/session-monitor",
    ] {
        assert!(root.join(file).is_file(), "{file} missing");
    }
    let logs = std::fs::metadata(root.join("var/log/session-monitor")).expect("log directory");
    assert_eq!(logs.permissions().mode() & 0o777, 0o700);

    // systemd accepts the unit, in the installed root.
    let verified = process::run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", root.display()))
            .arg("/lib/systemd/system/session-monitor.service"),
    );
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    // The capabilities are exactly those the daemon checks for at start.
    let bounding: Vec<&str> = unit_value(&unit, "CapabilityBoundingSet")[0]
        .split_whitespace()
        .collect();
    assert_eq!(
        bounding,
        [
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_SYS_ADMIN",
            "CAP_KILL",
            "CAP_SYS_PTRACE",
            "CAP_DAC_OVERRIDE"
        ]
    );
}

#[test]
fn ready_after_the_probes_are_attached_and_watchdog_pings_at_half_the_timeout() {
    let _guard = test_guard!();
    let dir = TempDir::new("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let watchdog = Duration::from_secs(2);
    let daemon = Daemon::builder()
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        .start();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("READY=1 from the daemon");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("READY=1\n"), "{first}");
    // By then the probes were attached (logged before READY) and status answers.
    assert!(daemon.log().contains("attached probes"), "{}", daemon.log());
    let status = daemon.status();
    assert!(
        !status["programs"].as_array().unwrap().is_empty(),
        "{status}"
    );

    let started = Instant::now();
    let mut pings = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        let n = socket.recv(&mut buf).expect("a watchdog ping");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        pings.push(Instant::now());
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("watchdog pings {} in 6 s, gaps {gaps:?}", pings.len());
    // Every second (half of 2 s); never as late as the timeout itself.
    assert!(pings.len() >= 4, "{} pings in 6 s", pings.len());
    assert!(gaps.iter().all(|g| *g < watchdog), "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g > Duration::from_millis(500)),
        "{gaps:?}"
    );
}

#[test]
fn a_policy_in_a_directory_created_after_the_start_is_picked_up() {
    let _guard = test_guard!();
    let holder = TempDir::new("confdir");
    let config_dir = holder.join("session-monitor");
    let policy = config_dir.join("policy.toml");
    // --dry-run: until the file appears the daemon runs with the built-in defaults,
    // which must not end anybody's session on this machine.
    let daemon = Daemon::builder()
        .arg("--config")
        .arg(&policy)
        .arg("--dry-run")
        .start();
    let before = daemon.status()["policy"].as_str().unwrap().to_string();
    assert!(before.starts_with("built-in defaults"), "{before}");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(&policy, UNLIMITED_POLICY).unwrap();
    let loaded = Wait::new("the new policy to be loaded")
        .timeout(Duration::from_secs(20))
        .until(|| {
            let now = daemon.status()["policy"].as_str().unwrap().to_string();
            now.starts_with(&policy.display().to_string())
                .then_some(now)
        });
    assert!(loaded.contains("0 rules"), "{loaded}");
    assert!(
        daemon
            .audit()
            .iter()
            .any(|r| r["event"] == "policy_reload" && r["result"] == "ok"),
        "no policy_reload record"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let _guard = test_guard!();
    let mut daemon = Daemon::builder().arg("--log-format").arg("json").start();
    daemon.stop();
    // stdout (the audit records) and stderr (the log) both land in this file.
    let log = daemon.log();
    let mut levels = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value.get("level").is_some() {
            assert!(value["fields"]["message"].is_string(), "{value}");
            levels += 1;
        }
    }
    assert!(levels >= 3, "few log lines in:\n{log}");
}
