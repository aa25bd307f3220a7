//! TEMPORARY: the per-login kernel API the `kernel` branch provides (adopt,
//! members, login activity), with the names it will have, so that the daemon's
//! login code builds before that branch is merged. Removed on merge.

use anyhow::Result;

use super::KernelMaps;

pub mod flags {
    pub const TRANSPORT: u32 = 4;
    pub const LISTENER: u32 = 8;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LoginActivity {
    pub last_input_ns: u64,
    pub input_bytes: u64,
    pub input_count: u64,
}

impl KernelMaps {
    pub fn adopt(&mut self, tgid: u32, _login: u64, flags: u32) -> Result<()> {
        self.track(tgid, flags & 3)
    }

    pub fn set_flags(&mut self, tgid: u32, flags: u32) -> Result<()> {
        if flags & 3 == 0 {
            return Ok(());
        }
        self.track(tgid, flags & 3)
    }

    pub fn members(&self, _login: u64) -> Vec<u32> {
        Vec::new()
    }

    pub fn login_activity(&self, _login: u64) -> Option<LoginActivity> {
        None
    }

    pub fn forget_login(&mut self, _login: u64) {}

    /// The login the kernel has for a process (0: none).
    pub fn login_of(&self, _tgid: u32) -> u64 {
        0
    }
}
