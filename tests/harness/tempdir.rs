//! Temporary directories named after the test process (`/tmp/smt-<pid>-<label>-XXXXXX`),
//! so that leftovers of a killed run can be recognised and removed by the next one.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

/// Prefix of every temporary directory the harness creates under `/tmp`.
pub(crate) const PREFIX: &str = "smt-";

/// A directory removed with its contents on drop. Set `SESSION_MONITOR_TEST_KEEP=1`
/// to keep it (its path is printed) for a post-mortem.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `/tmp/smt-<pid>-<label>-XXXXXX`, mode 0700.
    pub fn new(label: &str) -> Self {
        let template =
            std::env::temp_dir().join(format!("{PREFIX}{}-{label}-XXXXXX", std::process::id()));
        let path = nix::unistd::mkdtemp(&template)
            .unwrap_or_else(|e| panic!("mkdtemp {}: {e}", template.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a file into the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Gives the directory to another user (for servers that run as a test user).
    pub fn chown(&self, uid: u32, gid: u32) {
        std::os::unix::fs::chown(&self.path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", self.path.display()));
    }

    /// Lets everybody traverse the directory (to reach a file with its own mode).
    pub fn allow_traverse(&self) {
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o711))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", self.path.display()));
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SESSION_MONITOR_TEST_KEEP").is_some_and(|v| v == "1") {
            eprintln!("kept {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
