//! `session_monitor_backend_info{backend}`: an info metric whose value can change at
//! run time (the library's `Info` is fixed at registration).

use std::sync::{Mutex, PoisonError};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::labels::BackendLabels;

/// The probe backend in use; nothing is exported until the core has set it.
#[derive(Debug, Default)]
pub(super) struct BackendInfo {
    backend: Mutex<Option<String>>,
}

impl BackendInfo {
    pub fn set(&self, backend: &str) {
        *self.backend.lock().unwrap_or_else(PoisonError::into_inner) = Some(backend.to_string());
    }
}

impl Collector for BackendInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(backend) = backend.as_ref() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "backend",
            "The kernel probe backend in use (fentry or tracepoint); the value is always 1.",
            None,
            MetricType::Info,
        )?;
        family.encode_info(&BackendLabels {
            backend: backend.clone(),
        })
    }
}
