//! session-monitor: the daemon and its command-line client.

mod audit;
mod cli;
mod clock;
mod control;
mod daemon;
mod docs;
mod enforce;
mod labels;
mod metrics;
mod output;
mod policy;
mod preflight;
mod probes;
mod revoke;
mod sessions;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::{
    cli::{AuditCommand, Cli, Command, LogFormat},
    control::Request,
    daemon::{DaemonOptions, Explanation, Status},
    probes::LoadOptions,
    sessions::SessionView,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("session-monitor: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("session-monitor: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, as text or JSON lines; `RUST_LOG` filters them (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let opts = DaemonOptions {
                socket: cli.socket,
                load: LoadOptions {
                    backend: args.backend,
                    pin_dir: (!args.pin_dir.is_empty()).then(|| args.pin_dir.into()),
                    ..LoadOptions::default()
                },
                config: args.config,
                audit_log: args.audit_log,
                dry_run: args.dry_run,
                state_dir: args.state_dir,
                metrics_addr: args.metrics_addr,
            };
            daemon::run(opts).await?;
        }
        Command::Sessions { json } => {
            let data = control::request(&cli.socket, &Request::Sessions).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                let sessions: Vec<SessionView> =
                    serde_json::from_value(data).context("decoding sessions")?;
                print!("{}", output::sessions_table(&sessions));
            }
        }
        Command::Status { json } => {
            let data = control::request(&cli.socket, &Request::Status).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                let status: Status = serde_json::from_value(data).context("decoding status")?;
                print!("{}", output::status_text(&status));
            }
        }
        Command::Explain { id, json } => {
            let data = control::request(&cli.socket, &Request::Explain { id }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                let explanation: Explanation =
                    serde_json::from_value(data).context("decoding explanation")?;
                print!("{}", output::explanation_text(&explanation));
            }
        }
        Command::Revoke {
            who,
            duration,
            reason,
        } => {
            let request = Request::Revoke {
                user: who.user,
                uid: who.uid,
                group: who.group,
                duration_secs: duration.map(|d| d.as_secs().max(1)),
                reason,
            };
            let data = control::request(&cli.socket, &request).await?;
            let ended = data
                .get("sessions_ended")
                .and_then(|v| v.as_array())
                .map_or(0, Vec::len);
            println!("revoked; {ended} live session(s) being ended");
        }
        Command::Unrevoke { who } => {
            let request = Request::Unrevoke {
                user: who.user,
                uid: who.uid,
                group: who.group,
            };
            control::request(&cli.socket, &request).await?;
            println!("revocation lifted");
        }
        Command::Revocations { json } => {
            let data = control::request(&cli.socket, &Request::Revocations).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                let list: Vec<revoke::Revocation> =
                    serde_json::from_value(data).context("decoding revocations")?;
                print!("{}", output::revocations_table(&list));
            }
        }
        Command::CheckConfig { file } => match policy::load_file(&file) {
            Ok(policy) => println!(
                "{}: ok ({} rules, mode {:?})",
                file.display(),
                policy.rules.len(),
                policy.mode
            ),
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::GenerateDocs { out } => docs::generate(&out)?,
        Command::Audit(AuditCommand::Verify { files }) => match audit::verify_files(&files) {
            Ok(report) => print!("{}", report.describe()),
            Err(err) => {
                eprintln!("{err:#}");
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
