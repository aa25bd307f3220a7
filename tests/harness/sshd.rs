//! A private OpenSSH server on a free loopback port, with its own host key and a
//! client key that test users can authorise.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{TestUser, process, shell_join, tempdir::TempDir, wait::Wait};

const SSHD: &str = "/usr/sbin/sshd";
/// sshd's privilege separation directory; it refuses to start without it.
const PRIVSEP_DIR: &str = "/run/sshd";

/// `sshd -D -e -f DIR/sshd_config` listening on 127.0.0.1. Without PAM, so that test
/// users with a `*` password can log in with the client key. Dropping it kills the
/// server and every connection it serves.
pub struct Sshd {
    dir: TempDir,
    child: Child,
    port: u16,
    client_key: PathBuf,
    log: PathBuf,
}

impl Sshd {
    /// Starts the server and waits until its port accepts connections.
    pub fn start() -> Sshd {
        Self::start_with(false)
    }

    /// Like [`Sshd::start`], with `UsePAM yes`: logins go through Debian's PAM stack,
    /// whose `pam_loginuid` gives each login an audit session id (what real servers
    /// do, and what ties a daemonized tmux server to the login that started it).
    pub fn start_with_pam() -> Sshd {
        Self::start_with(true)
    }

    fn start_with(pam: bool) -> Sshd {
        let dir = TempDir::new("sshd");
        keygen(&dir.join("host_ed25519"));
        let client_key = dir.join("client_ed25519");
        keygen(&client_key);
        std::fs::create_dir_all(PRIVSEP_DIR).unwrap_or_else(|e| panic!("mkdir {PRIVSEP_DIR}: {e}"));
        let log = dir.join("sshd.log");
        // The port is free when we look; if another process takes it before sshd
        // binds it, try another.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let config = dir.write("sshd_config", sshd_config(&dir, port, pam));
            let log_file =
                File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("dup log file"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
            let ready = Wait::new(format!("sshd to accept connections on port {port}"))
                .timeout(Duration::from_secs(15))
                .poll(Duration::from_millis(50))
                .try_until_ok(|| {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("sshd exited ({status})"));
                    }
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                        .map(drop)
                        .map_err(|e| e.to_string())
                });
            match ready {
                Ok(()) => {
                    return Sshd {
                        dir,
                        child,
                        port,
                        client_key,
                        log,
                    };
                }
                Err(message) => {
                    process::stop_child(&mut child, Duration::from_secs(2));
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = format!("{message}\n----- sshd log -----\n{log}");
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("cannot start sshd: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The client's private key (readable by root only).
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The client's public key, an `authorized_keys` line.
    pub fn client_public_key(&self) -> String {
        let path = self.client_key.with_extension("pub");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// Lets `user` log in with the client key.
    pub fn authorize(&self, user: &TestUser) {
        user.authorize_key(&self.client_public_key());
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `ssh` words for this server, without terminal options or destination:
    /// the client key, no host key checks, no system configuration, the port.
    pub fn ssh_base_args(&self) -> Vec<String> {
        let mut args = vec!["ssh".to_string(), "-F".into(), "/dev/null".into()];
        args.extend(["-i".into(), self.client_key.display().to_string()]);
        for option in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "LogLevel=ERROR",
        ] {
            args.extend(["-o".into(), option.into()]);
        }
        args.extend(["-p".into(), self.port.to_string()]);
        args
    }

    /// `ssh -tt ... user@127.0.0.1` as words, for an interactive login (run it as
    /// root: the client key is root's).
    pub fn ssh_args(&self, user: &TestUser) -> Vec<String> {
        let mut args = self.ssh_base_args();
        args.insert(1, "-tt".into());
        args.push(format!("{}@127.0.0.1", user.name()));
        args
    }

    /// [`Sshd::ssh_args`] as one shell command line (for a tmux session).
    pub fn ssh_command(&self, user: &TestUser) -> String {
        shell_join(self.ssh_args(user))
    }

    /// The value for `mosh --ssh=...`: the ssh command without `-tt` or destination
    /// (mosh adds its own).
    pub fn mosh_ssh_option(&self) -> String {
        shell_join(self.ssh_base_args())
    }

    /// The temporary directory holding keys, configuration and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Connections are served by children of the listener; they outlive it.
        let connections = process::descendants(self.child.id());
        process::stop_child(&mut self.child, Duration::from_secs(5));
        process::kill_all(&connections);
        if std::thread::panicking() {
            eprintln!(
                "----- sshd log ({}) -----\n{}----- end of sshd log -----",
                self.log.display(),
                self.log()
            );
        }
    }
}

fn keygen(path: &Path) {
    process::run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "session-monitor-test",
                "-f",
            ])
            .arg(path),
    );
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

fn sshd_config(dir: &TempDir, port: u16, pam: bool) -> String {
    format!(
        "\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {pid_file}
UsePAM {pam}
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin no
PrintMotd no
PrintLastLog no
X11Forwarding no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
",
        host_key = dir.join("host_ed25519").display(),
        pid_file = dir.join("sshd.pid").display(),
        pam = if pam { "yes" } else { "no" },
    )
}
