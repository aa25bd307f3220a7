//! Reads the ring buffer asynchronously and hands decoded events to the daemon.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use session_monitor_common::Event;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
    task::JoinHandle,
};

/// Spawns the reader. `received` counts events read, for `status` and readiness.
pub fn spawn_event_reader(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Event>,
    received: Arc<AtomicU64>,
) -> Result<JoinHandle<()>> {
    // SAFETY: the ring buffer owns its map fd for as long as it lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("watching the ring buffer: {err}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::error!("ring buffer unreadable: {err}");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                if let Some(event) = decode(&item) {
                    batch.push(event);
                }
            }
            guard.clear_ready();
            received.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for event in batch {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    }))
}

fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < Event::SIZE {
        tracing::warn!(len = bytes.len(), "short event in ring buffer");
        return None;
    }
    // SAFETY: Event is plain old data and the buffer is at least its size.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}
