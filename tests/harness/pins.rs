//! Pin directories on bpffs for test daemons (`--pin-dir`): each daemon keeps its
//! kernel state apart from the machine's daemon and from other tests, and a test
//! that restarts a daemon hands the same directory to its successor. Named like the
//! temporary directories (`/sys/fs/bpf/smt-<pid>-<label>-XXXXXX`), so the leftovers of
//! a killed run are recognised and removed (which also detaches their programs).

use std::path::{Path, PathBuf};

use crate::tempdir::PREFIX;

/// Where bpffs is mounted (`cargo xtask setup` mounts it).
pub const BPFFS: &str = "/sys/fs/bpf";

/// A directory on bpffs, removed with every pin in it on drop.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    pub fn new(label: &str) -> Self {
        let template =
            Path::new(BPFFS).join(format!("{PREFIX}{}-{label}-XXXXXX", std::process::id()));
        let path = nix::unistd::mkdtemp(&template).unwrap_or_else(|e| {
            panic!(
                "mkdtemp {}: {e} (is bpffs mounted at {BPFFS}? `cargo xtask setup` mounts it)",
                template.display()
            )
        });
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Pin directories of test processes that are gone.
pub(crate) fn stale(dead: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    std::fs::read_dir(BPFFS)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix(PREFIX)
                        .and_then(|rest| rest.split('-').next()?.parse::<u32>().ok())
                        .is_some_and(&dead)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
