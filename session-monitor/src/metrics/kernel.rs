//! The probes' own counters, kept in a kernel map and read by the core from time to
//! time ([`CounterSnapshot`]). They are monotonic in the kernel, so they are exposed as
//! counters holding the kernel's totals, not re-counted here.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};
use session_monitor_common::{Probe, Stat};

use super::labels::ProbeStatLabels;
use crate::probes::CounterSnapshot;

/// A kernel total that stays monotonic when the kernel's count restarts from zero
/// (probes reloaded, map recreated): what was counted before the restart is kept as
/// a base, the way Prometheus itself handles counter resets.
#[derive(Clone, Copy, Debug, Default)]
struct Monotonic {
    base: u64,
    last: u64,
}

impl Monotonic {
    fn update(&mut self, raw: u64) {
        if raw < self.last {
            self.base = self.base.saturating_add(self.last);
        }
        self.last = raw;
    }

    fn value(self) -> u64 {
        self.base.saturating_add(self.last)
    }
}

#[derive(Debug)]
struct Totals {
    /// Every probe and stat, from the first scrape on (zero until read).
    events: BTreeMap<(&'static str, &'static str), Monotonic>,
    revoke_signals: Monotonic,
    read_errors: Monotonic,
    answers_ignored: Monotonic,
    injections_ignored: Monotonic,
    procs_insert_failures: Monotonic,
    login_insert_failures: Monotonic,
}

impl Default for Totals {
    fn default() -> Self {
        let events = Probe::ALL
            .iter()
            .flat_map(|probe| {
                Stat::ALL
                    .iter()
                    .map(move |stat| ((probe.name(), stat.name()), Monotonic::default()))
            })
            .collect();
        Self {
            events,
            revoke_signals: Monotonic::default(),
            read_errors: Monotonic::default(),
            answers_ignored: Monotonic::default(),
            injections_ignored: Monotonic::default(),
            procs_insert_failures: Monotonic::default(),
            login_insert_failures: Monotonic::default(),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct KernelCollector {
    totals: Mutex<Totals>,
}

impl KernelCollector {
    pub fn update(&self, snapshot: &CounterSnapshot) {
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        for probe in &snapshot.probes {
            for (stat, raw) in [
                (Stat::Seen, probe.seen),
                (Stat::Matched, probe.matched),
                (Stat::Sent, probe.sent),
                (Stat::Dropped, probe.dropped),
            ] {
                totals
                    .events
                    .entry((probe.probe, stat.name()))
                    .or_default()
                    .update(raw);
            }
        }
        totals.revoke_signals.update(snapshot.revoke_signals);
        totals.read_errors.update(snapshot.read_errors);
        totals.answers_ignored.update(snapshot.answers_ignored);
        totals
            .injections_ignored
            .update(snapshot.injections_ignored);
        totals
            .procs_insert_failures
            .update(snapshot.procs_insert_failures);
        totals
            .login_insert_failures
            .update(snapshot.login_insert_failures);
    }
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);

        let mut family = encoder.encode_descriptor(
            "kernel_events",
            "Events handled by each kernel probe: seen (the program ran), matched (it \
             concerned a terminal or tracked process), sent (to the daemon), dropped (ring \
             buffer full).",
            None,
            MetricType::Counter,
        )?;
        for (&(probe, stat), total) in &totals.events {
            family
                .encode_family(&ProbeStatLabels { probe, stat })?
                .encode_counter::<NoLabelSet, _, u64>(&total.value(), None)?;
        }

        let dropped: u64 = totals
            .events
            .iter()
            .filter(|((_, stat), _)| *stat == Stat::Dropped.name())
            .map(|(_, total)| total.value())
            .fold(0, u64::saturating_add);
        let mut family = encoder.encode_descriptor(
            "ringbuf_reservation_failures",
            "Events lost because the kernel could not reserve room in the ring buffer \
             (the daemon reads too slowly); the sum of kernel_events_total{stat=\"dropped\"}.",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<NoLabelSet, _, u64>(&dropped, None)?;

        let mut family = encoder.encode_descriptor(
            "kernel_revoke_signals",
            "Signals the kernel probes sent to stop input of revoked users.",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<NoLabelSet, _, u64>(&totals.revoke_signals.value(), None)?;

        let mut family = encoder.encode_descriptor(
            "kernel_read_errors",
            "Kernel memory reads that failed inside the probes.",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<NoLabelSet, _, u64>(&totals.read_errors.value(), None)?;

        let mut family = encoder.encode_descriptor(
            "kernel_answers_ignored",
            "Writes into pty masters, and console input, that held only terminal answers \
             (cursor position, device attributes, colours, ...) and were not counted as \
             input.",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<NoLabelSet, _, u64>(&totals.answers_ignored.value(), None)?;

        let mut family = encoder.encode_descriptor(
            "kernel_injections_ignored",
            "Console input that a process of the console's own session put there itself \
             (TIOCSTI) and that was not counted as input.",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<NoLabelSet, _, u64>(&totals.injections_ignored.value(), None)?;

        let mut family = encoder.encode_descriptor(
            "kernel_procs_insert_failures",
            "Processes of a login the kernel could not record at fork (map PROCS full or \
             out of memory): they escape their login's end. Should stay 0.",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<NoLabelSet, _, u64>(&totals.procs_insert_failures.value(), None)?;

        let mut family = encoder.encode_descriptor(
            "kernel_login_insert_failures",
            "Logins whose input without a terminal the kernel could not record (map \
             LOGIN_ACTIVITY full). Should stay 0.",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<NoLabelSet, _, u64>(&totals.login_insert_failures.value(), None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_count_that_restarts_keeps_the_total_monotonic() {
        let mut total = Monotonic::default();
        total.update(5);
        total.update(9);
        assert_eq!(total.value(), 9);
        total.update(2); // probes reloaded: the kernel counts from zero again
        assert_eq!(total.value(), 11);
        total.update(4);
        assert_eq!(total.value(), 13);
    }
}
