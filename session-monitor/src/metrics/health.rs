//! Readiness state that the daemon core flips and `/readyz` reports.

use std::sync::{
    Arc, Mutex,
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
    /// Why the audit log cannot be written, while it cannot.
    audit_degraded: Mutex<Option<String>>,
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

    /// Why the audit log cannot be written (`None`: it can).
    pub fn set_audit_degraded(&self, reason: Option<String>) {
        *self
            .state
            .audit_degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Why the audit log cannot be written, if it cannot.
    pub fn audit_degraded(&self) -> Option<String> {
        self.state
            .audit_degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `Ok` when the daemon sees sessions from the kernel and can write its audit
    /// log, else a one-line reason. A daemon that cannot write its audit log still
    /// enforces the policy, but is not ready: what it does is not recorded.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.state.probes_attached.load(Ordering::Relaxed) {
            return Err("kernel probes are not attached".into());
        }
        if !self.state.ringbuf_reading.load(Ordering::Relaxed) {
            return Err("the kernel event ring buffer is not being read".into());
        }
        if let Some(reason) = &*self
            .state
            .audit_degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            return Err(format!("degraded: {reason}"));
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
        assert_eq!(
            health.readiness(),
            Err("kernel probes are not attached".to_string())
        );
        let core_side = health.clone();
        core_side.set_probes_attached(true);
        assert!(health.readiness().unwrap_err().contains("ring buffer"));
        core_side.set_ringbuf_reading(true);
        assert_eq!(health.readiness(), Ok(()));
        core_side.set_audit_degraded(Some("disk full".into()));
        assert_eq!(health.readiness(), Err("degraded: disk full".to_string()));
        core_side.set_audit_degraded(None);
        assert_eq!(health.readiness(), Ok(()));
        core_side.set_probes_attached(false);
        assert!(health.readiness().is_err());
    }
}
