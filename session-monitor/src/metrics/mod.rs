//! Prometheus metrics and the health endpoints.
//!
//! The core owns an `Arc<`[`Metrics`]`>` and calls its methods as things happen
//! (sessions start and end, warnings, revocations, reloads, refused control requests),
//! pushes a snapshot of the live sessions with [`Metrics::update_live`] and the kernel
//! counters with [`Metrics::set_kernel_counters`], and flips the readiness flags of a
//! [`Health`]. [`serve`] answers `/metrics`, `/healthz` and `/readyz` over HTTP.
//!
//! Every family is named `session_monitor_*`, durations are in seconds, and counters
//! end in `_total`. By default no label is unbounded (no pids, terminals, remote
//! addresses or users); per-user labels are an opt-in of the operator.
//!
//! | file | concern |
//! | --- | --- |
//! | `registry.rs` | [`Metrics`]: the families and the recording methods |
//! | `labels.rs` | label sets and the closed sets of label values |
//! | `live.rs` | the live-session snapshot ([`LiveSample`]) |
//! | `kernel.rs` | the kernel probes' counters |
//! | `info.rs` | the backend info metric |
//! | `health.rs` | [`Health`], the readiness flags |
//! | `http.rs` | [`serve`], the HTTP endpoints |

mod health;
mod http;
mod info;
mod kernel;
mod labels;
mod live;
mod registry;

pub use health::Health;
pub use http::serve;
// The closed label sets, for the tests that hold the encoding to them.
#[cfg(test)]
pub use labels::WARNING_REASONS;
pub use live::LiveSample;
pub use registry::Metrics;

#[cfg(test)]
mod tests;
