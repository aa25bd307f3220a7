//! The load-time configuration global. Every read goes through `read_volatile`:
//! the initial value is all zeros, and without it the compiler would fold the zeros in.

use session_monitor_common::ProbeConfig;

#[unsafe(no_mangle)]
static CONFIG: ProbeConfig = unsafe { core::mem::zeroed() };

/// Reads one field of the configuration, e.g. `conf!(offsets.tty_index)`.
macro_rules! conf {
    ($($field:ident).+) => {
        // SAFETY: CONFIG is a plain static; volatile only stops constant folding.
        unsafe { core::ptr::read_volatile(&$crate::config::config().$($field).+) }
    };
}
pub(crate) use conf;

#[inline(always)]
pub fn config() -> &'static ProbeConfig {
    &CONFIG
}
