//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{control::DEFAULT_SOCKET, probes::BackendChoice};

/// Ends idle and revoked interactive sessions (SSH, Mosh, consoles, containers, local
/// terminals), deciding from the kernel with eBPF what the user actually typed.
#[derive(Debug, Parser)]
#[command(name = "session-monitor", version, max_term_width = 100)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "SESSION_MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
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
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which kernel probes to use: fentry where the kernel allows BPF trampolines,
    /// tracepoints otherwise (`auto`), or force one.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}
