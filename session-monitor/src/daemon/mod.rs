//! `session-monitor run`: the daemon. One task (the [`core::Core`]) owns all state —
//! the probes' maps, the session table, the policy, pending deadlines — and reacts to
//! kernel events, control requests, timers and reload triggers; the other tasks only
//! feed it messages, so nothing is locked.

mod core;
mod ending;
mod enforcement;
mod nesting;
mod notify;
mod reload;
mod requests;
mod revocation;
mod status;
mod user;
mod warning;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    audit::{self, AuditLog},
    control::{Access, ControlServer},
    metrics::{Health, Metrics},
    policy::{self, Policy},
    preflight,
    probes::{self, LoadOptions},
    revoke::Revocations,
};

pub use requests::Explanation;
pub use status::Status;

pub struct DaemonOptions {
    pub socket: PathBuf,
    pub load: LoadOptions,
    /// The policy file; absent = built-in defaults (the file is still watched).
    pub config: PathBuf,
    /// Overrides the policy's `audit_log`.
    pub audit_log: Option<PathBuf>,
    /// Forces dry-run whatever the policy says.
    pub dry_run: bool,
    /// Where revocations are persisted.
    pub state_dir: PathBuf,
    /// `--metrics-addr`: overrides the policy's `metrics_addr`; empty turns it off.
    pub metrics_addr: Option<String>,
}

/// Where metrics are served unless the policy or the command line says otherwise.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9469";

/// How often sessions are checked against /proc for exits the probes could not see
/// and terminals that could not be resolved yet.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// File changes come in bursts (ConfigMap updates touch several entries).
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

pub async fn run(opts: DaemonOptions) -> Result<()> {
    check_host(&opts)?;
    // Watch before reading, so that no change after the read goes unnoticed.
    let (reload_tx, mut reloads) = mpsc::channel(1);
    let _watcher = match policy::spawn_watcher(&opts.config, reload_tx) {
        Ok(w) => Some(w),
        Err(err) => {
            tracing::warn!("policy changes are picked up on SIGHUP only: {err:#}");
            None
        }
    };
    let policy_fingerprint = reload::fingerprint(&opts.config);
    let policy = initial_policy(&opts)?;
    let metrics_addr = metrics_addr(&opts, &policy)?;
    let revocations = Revocations::load(&opts.state_dir)?;
    // Bind first: a second daemon must stop here, before it touches the audit log
    // or loads a second set of probes.
    let (access, access_rx) = tokio::sync::watch::channel(access_of(&policy));
    let (control_tx, mut control) = mpsc::channel(64);
    let _server = ControlServer::start(&opts.socket, access_rx, control_tx)?;

    let audit_path = opts
        .audit_log
        .clone()
        .or_else(|| policy.audit_log.clone())
        .unwrap_or_else(|| PathBuf::from(audit::DEFAULT_PATH));
    let metrics = Metrics::new(policy.metrics_user_labels);
    let health = Health::new();
    let mut audit = AuditLog::open(&audit_path, true)?
        .observed_by(metrics.audit_write_errors(), health.clone());
    audit.set_rotation(policy.audit_rotation);
    // logrotate moved the audit log away: reopen it by its name. Handled from here
    // on, so that a rotation during start-up does not end the daemon.
    let mut reopen = signal(SignalKind::user_defined1())?;

    let (probes, maps, ring) = probes::load(&opts.load)?;
    metrics.set_backend(&probes.backend.to_string());
    health.set_probes_attached(true);
    let received = Arc::new(AtomicU64::new(0));
    let (event_tx, mut events) = mpsc::channel(16 * 1024);
    let mut reader = probes::spawn_event_reader(ring, event_tx, received.clone())?;
    health.set_ringbuf_reading(true);
    let (metrics_server, metrics_bound) = match metrics_addr {
        Some(addr) => {
            let (task, bound) =
                crate::metrics::serve(addr, metrics.clone(), health.clone()).await?;
            (Some(task), Some(bound))
        }
        None => {
            tracing::info!("metrics endpoint off");
            (None, None)
        }
    };

    let (done_tx, mut terminations) = mpsc::channel(256);
    let (warned_tx, mut warnings_written) = mpsc::channel(256);
    let (snapshot_tx, mut snapshots) = mpsc::channel(1);
    let mut core = core::Core::new(core::CoreParts {
        probes,
        maps,
        received,
        policy,
        config_path: opts.config.clone(),
        force_dry_run: opts.dry_run,
        audit,
        terminations: done_tx,
        warnings_written: warned_tx,
        snapshots: snapshot_tx,
        revocations,
        access,
        metrics,
        metrics_addr: metrics_bound,
        policy_fingerprint,
        given: crate::enforce::GivenWarnings::new(&opts.state_dir),
    });
    core.record_start();
    core.discover_existing();
    core.follow_logins();
    core.sync_policy_revocations();
    tracing::info!(socket = %opts.socket.display(), "control socket ready");
    let notifier = notify::Notifier::from_env();
    notifier.ready(&format!("watching with the {} probes", core.probes.backend));
    let mut watchdog = notifier.watchdog_interval().map(|every| {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });

    let mut reload_at: Option<tokio::time::Instant> = None;

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let resolve_at = core.next_resolution();
        let deadline_at = core.next_deadline();
        // In this order, not at random: due warnings and ends first, so that when a
        // thousand logins fall due together the last decision does not wait behind
        // the bookkeeping of the ends already carried out (each decision reads the
        // latest input from the kernel maps itself, so events waiting behind it
        // cannot make it wrong).
        tokio::select! {
            biased;
            _ = sleep_until_opt(deadline_at) => core.on_deadlines(),
            Some(event) = events.recv() => core.on_event(event),
            Some(incoming) = control.recv() => core.on_control(incoming),
            Some(done) = terminations.recv() => core.on_termination_done(done),
            Some(written) = warnings_written.recv() => core.on_warning_written(written),
            Some(resolver) = snapshots.recv() => core.on_snapshot(resolver),
            _ = sleep_until_opt(resolve_at) => core.resolve_pending(),
            _ = reconcile.tick() => core.reconcile(),
            // Armed once per burst and never postponed: a file that keeps changing
            // is still reloaded every RELOAD_DEBOUNCE.
            Some(()) = reloads.recv() => {
                reload_at.get_or_insert(tokio::time::Instant::now() + RELOAD_DEBOUNCE);
            }
            _ = sleep_until_opt(reload_at) => {
                reload_at = None;
                core.reload(false);
            }
            _ = hangup.recv() => core.reload(true),
            _ = reopen.recv() => core.audit.reopen(),
            _ = tick_opt(&mut watchdog) => notifier.watchdog(),
            _ = &mut reader => {
                // Blind without events: fail loudly so that a supervisor restarts us.
                health.set_ringbuf_reading(false);
                core.record_stop();
                anyhow::bail!("the kernel event reader stopped");
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        core.carry_out_decisions();
        core.follow_logins();
    }
    tracing::info!("stopping");
    notifier.stopping();
    core.record_stop();
    // A deliberate stop leaves no program running; the maps stay pinned so that the
    // next start knows every session's last input (see probes::pins).
    core.probes.release();
    reader.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    Ok(())
}

/// Capabilities, kernel interfaces and directories the daemon cannot work without.
fn check_host(opts: &DaemonOptions) -> Result<()> {
    let audit_log = opts
        .audit_log
        .as_deref()
        .unwrap_or(Path::new(audit::DEFAULT_PATH));
    let used: Vec<&Path> = [
        Some(opts.state_dir.as_path()),
        opts.socket.parent(),
        audit_log.parent(),
        opts.config.parent(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let problems = preflight::startup_problems(&used);
    for problem in &problems {
        tracing::warn!("{problem}");
    }
    let fatal: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == preflight::Severity::Fatal)
        .map(|p| format!("  {p}"))
        .collect();
    if !fatal.is_empty() {
        anyhow::bail!("cannot start:\n{}", fatal.join("\n"));
    }
    Ok(())
}

/// The metrics address: `--metrics-addr`, else the policy's `metrics_addr`, else
/// [`DEFAULT_METRICS_ADDR`]; an empty value turns the endpoint off.
fn metrics_addr(opts: &DaemonOptions, policy: &Policy) -> Result<Option<std::net::SocketAddr>> {
    if let Some(flag) = &opts.metrics_addr {
        if flag.trim().is_empty() {
            return Ok(None);
        }
        return flag.trim().parse().map(Some).with_context(|| {
            format!("--metrics-addr `{flag}` is not an address like 127.0.0.1:9469")
        });
    }
    Ok(match policy.metrics_addr {
        Some(addr) => addr,
        None => Some(DEFAULT_METRICS_ADDR.parse().expect("valid default")),
    })
}

/// Who may use the control socket under `policy`: root, and the `control_group`.
pub(crate) fn access_of(policy: &Policy) -> Access {
    let group = policy
        .control_group
        .as_ref()
        .and_then(|name| match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some((name.clone(), g.gid.as_raw())),
            _ => {
                tracing::warn!(
                    "control_group `{name}` does not exist; the control socket stays root-only"
                );
                None
            }
        });
    Access { group }
}

/// The policy at start-up. A missing file means built-in defaults; an invalid one
/// stops the daemon (at start there is no last good policy to keep).
fn initial_policy(opts: &DaemonOptions) -> Result<Policy> {
    if !opts.config.exists() {
        tracing::info!(
            "no policy file at {}; using built-in defaults (idle 15m, network 1h, warning 60s)",
            opts.config.display()
        );
        return Ok(Policy::default());
    }
    let policy = policy::load_file(&opts.config)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("invalid policy {}", opts.config.display()))?;
    tracing::info!("policy: {}", policy.describe());
    Ok(policy)
}

async fn tick_opt(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
