//! session-monitor: the daemon and its command-line client.

mod cli;
mod docs;
mod output;

// At the crate root, so that the CLI modules' `crate::daemon` etc. name the library's.
use session_monitor::{audit, clock, control, daemon, policy, probes, revoke, sessions};

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;
use serde::{Serialize, de::DeserializeOwned};
use tracing_subscriber::EnvFilter;

use crate::{
    cli::{AuditCommand, Cli, Command, LogFormat},
    control::{Lifted, Request, Revoked},
    daemon::{DaemonOptions, Explanation, Status},
    output::Text,
    probes::LoadOptions,
    revoke::Revocation,
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
    let socket = &cli.socket;
    match cli.command {
        Command::Run(args) => {
            let opts = DaemonOptions {
                socket: socket.clone(),
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
            show::<Vec<SessionView>>(socket, Request::Sessions, json).await?
        }
        Command::Status { json } => show::<Status>(socket, Request::Status, json).await?,
        Command::Explain { id, json } => {
            show::<Explanation>(socket, Request::Explain { id }, json).await?
        }
        Command::Revoke(revoke) => show::<Revoked>(socket, Request::Revoke(revoke), false).await?,
        Command::Unrevoke(who) => show::<Lifted>(socket, Request::Unrevoke(who), false).await?,
        Command::Revocations { json } => {
            show::<Vec<Revocation>>(socket, Request::Revocations, json).await?
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

/// Sends `request` and prints its typed reply: JSON with `--json`, else text.
async fn show<R>(socket: &std::path::Path, request: Request, json: bool) -> Result<()>
where
    R: DeserializeOwned + Serialize + Text,
{
    let reply: R = control::request(socket, &request).await?;
    if json {
        // Through a `Value`, whose keys are sorted, as the daemon's answer is.
        let value = serde_json::to_value(&reply)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", reply.text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// `--json` prints the typed reply again: it must read back every field the
    /// daemon sends, so that the printed JSON is the daemon's answer.
    fn prints_unchanged<R: DeserializeOwned + Serialize>(answer: Value) {
        let reply: R = serde_json::from_value(answer.clone()).expect("decodes");
        assert_eq!(serde_json::to_value(&reply).unwrap(), answer);
    }

    fn session() -> Value {
        json!({
            "id": "5c30f3998c95", "tty": "pts/3", "terminals": ["pts/3", "pts/4"],
            "carries": ["shell", "forwarding"], "kind": "container", "user": "alice",
            "uid": 1001, "identity_pid": 812, "leader_pid": 815, "server_pid": 812,
            "server": "sshd", "remote": "10.0.0.7:51234",
            "container": {"id": "0123abcd", "runtime": "podman", "pod_uid": "u-1"},
            "started_at": "2026-12-02T15:41:31.123456Z",
            "last_input_at": "2026-12-02T15:42:00.5Z", "idle_seconds": 12.345678,
            "network_idle_seconds": 0.25, "input_bytes": 4096, "input_count": 77,
            "nested_in": "aaaabbbbcccc"
        })
    }

    #[test]
    fn json_replies_print_as_the_daemon_sent_them() {
        let mut bare = session();
        let fields = bare.as_object_mut().unwrap();
        fields.remove("container");
        for k in ["tty", "server_pid", "server", "remote", "last_input_at"] {
            fields.insert(k.into(), Value::Null);
        }
        fields.insert("network_idle_seconds".into(), Value::Null);
        fields.insert("nested_in".into(), Value::Null);
        fields.insert("terminals".into(), json!([]));
        prints_unchanged::<Vec<SessionView>>(json!([session(), bare]));
        prints_unchanged::<Explanation>(json!({
            "session": session(), "groups": ["alice", "ops"], "rule": "ops",
            "matched_rules": ["ops", "default"],
            "limits": {"idle_timeout": "15m", "max_session": null, "network_timeout": "1h",
                       "warn_before": "1m", "exempt": false},
            "mode": "dry-run", "next": "warn", "reason": "idle",
            "warn_at": "2026-12-02T15:55:00Z", "end_at": "2026-12-02T15:56:00Z",
            "end_in_seconds": 868.5, "warned": false, "ending": true
        }));
        let status = json!({
            "version": "0.1.0", "pid": 4242, "kernel": "6.1.0-28-amd64",
            "backend": "tracepoint", "fallback_reason": "fentry: not supported",
            "programs": [{"name": "tty_write", "attach": "tp_btf/tty_write", "probe": "typed"}],
            "standby_programs": [{"name": "tp_read_exit",
                                  "attach": "tracepoint/syscalls/sys_exit_read",
                                  "probe": "console_input",
                                  "attached_while": "while a login has a console terminal",
                                  "attached": false}],
            "skipped_programs": ["udp_recv"], "udp_source": "tracepoint",
            "kernel_revocation": true, "offsets": {"task_struct.files": 2000},
            "counters": {"probes": [{"probe": "tty_write", "seen": 3, "matched": 2,
                                     "sent": 2, "dropped": 0}], "answers_ignored": 1},
            "events_received": 99, "ring_buffer_drops": 0, "sessions": 2,
            "unresolved_terminals": 1, "uptime_seconds": 3600, "policy": "/etc/x.toml",
            "mode": "enforce", "audit_log": "/var/log/session-monitor/audit.jsonl",
            "policy_reloads_ok": 1, "policy_reloads_rejected": 0,
            "metrics_addr": "127.0.0.1:9469",
            "kernel_state": {"dir": "/sys/fs/bpf/session-monitor/v3", "found": "reused",
                             "links_pinned": true}
        });
        prints_unchanged::<Status>(status.clone());
        let mut unpinned = status;
        for k in [
            "fallback_reason",
            "udp_source",
            "audit_log",
            "metrics_addr",
            "kernel_state",
        ] {
            unpinned[k] = Value::Null;
        }
        prints_unchanged::<Status>(unpinned);
        let revocation = json!({
            "target": {"type": "user", "name": "bob", "uid": 1002}, "since": 1700000000,
            "until": 1700003600, "reason": "left", "by_uid": 0, "source": "command"
        });
        let by_policy = json!({
            "target": {"type": "group", "name": "contractors", "gid": null},
            "since": 1700000000, "until": null, "reason": null, "by_uid": null,
            "source": "policy"
        });
        prints_unchanged::<Vec<Revocation>>(json!([revocation, by_policy]));
        prints_unchanged::<Revoked>(
            json!({"revoked": revocation, "sessions_ended": ["5c30f3998c95"]}),
        );
        prints_unchanged::<Lifted>(json!({"lifted": {"type": "uid", "uid": 1003}}));
    }
}
