//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    control::{DEFAULT_SOCKET, Revoke, Who},
    policy,
    probes::BackendChoice,
    revoke,
};

/// Ends idle and revoked interactive sessions (SSH, Mosh, consoles, containers, local
/// terminals), deciding from the kernel with eBPF what the user actually typed.
#[derive(Debug, Parser)]
#[command(name = "session-monitor", version, max_term_width = 100)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "SESSION_MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// How the daemon's own log (stderr) is written: `text` for people, `json` (one
    /// object per line) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (needs root).
    Run(RunArgs),
    /// List live sessions, like `w`.
    Sessions {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the probe backend, attached programs and kernel counters.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show which policy rule applies to a live session, and when it will be warned
    /// and ended.
    Explain {
        /// The session id, as `sessions` shows it.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// End every live session of a user (or uid, or group) now and keep them out:
    /// new sessions are ended as soon as they appear.
    Revoke(Revoke),
    /// Lift a revocation.
    Unrevoke(Who),
    /// List the revocations in force.
    Revocations {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a policy file without running anything.
    CheckConfig {
        /// The policy file.
        file: PathBuf,
    },
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write man pages and shell completions generated from this command line
    /// (used to build the package).
    #[command(hide = true)]
    GenerateDocs {
        /// Directory to write `man/` and `completions/` into.
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no record of an audit log was edited, removed or reordered. Give
    /// a rotated set (`audit.jsonl*`) to check the chain across its files; the order
    /// they are given in does not matter.
    Verify {
        /// The audit log files (JSON lines).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which kernel probes to use: fentry where the kernel allows BPF trampolines,
    /// tracepoints otherwise (`auto`), or force one.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,

    /// The policy file (TOML). Without it the daemon uses built-in defaults and
    /// picks the file up when it appears.
    #[arg(long, default_value = policy::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Where to append the audit log (default: the policy's `audit_log`, else
    /// /var/log/session-monitor/audit.jsonl). Records also go to stdout.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,

    /// Log and count what would be done, end nothing (overrides the policy's mode).
    /// Revocations are enforced in every mode.
    #[arg(long)]
    pub dry_run: bool,

    /// Serve /metrics, /healthz and /readyz here (default: the policy's
    /// `metrics_addr`, else 127.0.0.1:9469); an empty value turns them off.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// Where revocations and warnings already given are kept across restarts.
    #[arg(long, default_value = revoke::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Where the kernel side (activity maps, program links) is pinned, on a bpf file
    /// system, so that a restart loses no input; an empty value pins nothing.
    #[arg(long, value_name = "DIR", default_value = crate::probes::DEFAULT_PIN_DIR)]
    pub pin_dir: std::ffi::OsString,
}
