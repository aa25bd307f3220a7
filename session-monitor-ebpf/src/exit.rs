//! Process life cycle, shared by both backends: forks and exits are BTF tracepoints
//! everywhere, so neither needs a trampoline.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use session_monitor_common::{Probe, Stat};

use crate::{activity, maps::bump};

/// `sched_process_exit(struct task_struct *p, ...)` (`p` is the current task), as a
/// BTF tracepoint: nothing is read from its arguments, and a BTF tracepoint costs
/// no record (the classic one fills a perf record with the name, pid and priority
/// for every exiting thread on the host).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(_ctx: BtfTracePointContext) -> u32 {
    activity::process_exiting();
    0
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, as a
/// BTF tracepoint: the child's `task_struct` comes typed, so telling a new process
/// from a new thread is two direct loads, and no record is copied (the classic
/// tracepoint fills a perf record with both names, and gives only the child's
/// thread id).
#[btf_tracepoint(function = "sched_process_fork")]
pub fn process_fork(ctx: BtfTracePointContext) -> u32 {
    bump(Probe::ProcessFork, Stat::Seen);
    let child: *const u8 = ctx.arg(1);
    let _ = activity::process_forked(child);
    0
}
