//! Readiness state that the daemon core flips and `/readyz` reports.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// A cheap, clonable handle on the daemon's readiness. The core sets the flags; the
/// HTTP server reads them on every `/readyz` request. Both start `false`.
#[derive(Clone, Debug, Default)]
pub struct Health {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    probes_attached: AtomicBool,
    ringbuf_reading: AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the kernel probes are loaded and attached.
    pub fn set_probes_attached(&self, attached: bool) {
        self.state
            .probes_attached
            .store(attached, Ordering::Relaxed);
    }

    /// Whether a task is reading the probes' ring buffer.
    pub fn set_ringbuf_reading(&self, reading: bool) {
        self.state.ringbuf_reading.store(reading, Ordering::Relaxed);
    }

    /// `Ok` when the daemon sees sessions from the kernel, else a one-line reason.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.state.probes_attached.load(Ordering::Relaxed) {
            return Err("kernel probes are not attached");
        }
        if !self.state.ringbuf_reading.load(Ordering::Relaxed) {
            return Err("the kernel event ring buffer is not being read");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_probes_attached_and_ring_buffer_read() {
        let health = Health::new();
        assert_eq!(health.readiness(), Err("kernel probes are not attached"));
        let core_side = health.clone();
        core_side.set_probes_attached(true);
        assert!(health.readiness().unwrap_err().contains("ring buffer"));
        core_side.set_ringbuf_reading(true);
        assert_eq!(health.readiness(), Ok(()));
        core_side.set_probes_attached(false);
        assert!(health.readiness().is_err());
    }
}
