//! Process exit, shared by both backends: a classic tracepoint exists everywhere.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::activity;

#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    activity::process_exiting();
    0
}
