//! session-monitor's kernel programs.
//!
//! Two backends observe the same signals and share all of the logic in [`activity`]:
//! - [`tracepoints`]: classic tracepoints only, for hardened kernels that refuse
//!   trampolines (fentry/fexit) and kprobes.
//! - [`fentry`]: fentry programs on the tty and UDP receive paths, for stock kernels.
//!
//! The loader attaches one backend's programs (plus [`exit`]) and leaves the rest unloaded.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod activity;
mod config;
mod exit;
mod fentry;
mod kernel;
mod kfunc;
mod maps;
mod tracepoints;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
