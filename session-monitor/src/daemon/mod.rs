//! `session-monitor run`: the daemon. One task (the [`core::Core`]) owns all state —
//! the probes' maps, the session table — and reacts to kernel events, control
//! requests and timers; the other tasks only feed it messages, so nothing is locked.

mod core;
mod status;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use anyhow::Result;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    control::{Access, ControlServer},
    probes::{self, LoadOptions},
};

pub use status::Status;

pub struct DaemonOptions {
    pub socket: PathBuf,
    pub load: LoadOptions,
}

/// How often sessions are checked against /proc for exits the probes could not see
/// and terminals that could not be resolved yet.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(opts: DaemonOptions) -> Result<()> {
    let (probes, maps, ring) = probes::load(&opts.load)?;
    let received = Arc::new(AtomicU64::new(0));
    let (event_tx, mut events) = mpsc::channel(16 * 1024);
    let reader = probes::spawn_event_reader(ring, event_tx, received.clone())?;

    let mut core = core::Core::new(probes, maps, received);
    core.discover_existing();

    let (control_tx, mut control) = mpsc::channel(64);
    let _server = ControlServer::start(&opts.socket, Access::default(), control_tx)?;
    tracing::info!(socket = %opts.socket.display(), "control socket ready");

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let resolve_at = core.next_resolution();
        tokio::select! {
            Some(event) = events.recv() => core.on_event(event),
            Some(incoming) = control.recv() => core.on_control(incoming),
            _ = sleep_until_opt(resolve_at) => core.resolve_pending(),
            _ = reconcile.tick() => core.reconcile(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stopping");
    reader.abort();
    Ok(())
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
