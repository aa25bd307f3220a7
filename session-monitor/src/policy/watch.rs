//! Reload triggers: the policy file changing on disk. Kubernetes updates a mounted
//! ConfigMap by swapping a symlink (`..data`) in the directory, so the directory is
//! watched, not the file; editors that write a new file and rename it are caught the
//! same way.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Watches the directory of `path`; sends `()` when something in it changes. Keep
/// the returned watcher alive.
pub fn spawn_watcher(path: &Path, tx: mpsc::Sender<()>) -> Result<notify::RecommendedWatcher> {
    let dir: PathBuf = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // Full channel: a reload is already queued, which covers this change too.
            let _ = tx.try_send(());
        }
    })
    .context("creating the policy file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok(watcher)
}
