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
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        // Only the policy file itself, or the `..data` swap of a ConfigMap volume:
        // other files in the directory (an audit log kept there) are no reason.
        let relevant = !event.kind.is_access()
            && event.paths.iter().any(|p| {
                let file = p.file_name();
                file == name.as_deref()
                    || file.is_some_and(|f| f.to_string_lossy().starts_with(".."))
            });
        if relevant {
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
