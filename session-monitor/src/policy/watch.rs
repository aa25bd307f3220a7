//! Reload triggers: the policy file changing on disk. Kubernetes updates a mounted
//! ConfigMap by swapping a symlink (`..data`) in the directory, so the directory is
//! watched, not the file; editors that write a new file and rename it are caught the
//! same way. A directory that does not exist yet is watched from its parent: when
//! it appears, it is watched itself, and a policy already in it is picked up.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Keeps the watches alive; dropping it stops them.
pub struct PolicyWatcher {
    _parent: Option<notify::RecommendedWatcher>,
    _dir: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
}

/// Watches the directory of `path` (or, while it does not exist, its parent); sends
/// `()` when something in it changes.
pub fn spawn_watcher(path: &Path, tx: mpsc::Sender<()>) -> Result<PolicyWatcher> {
    let dir: PathBuf = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    if dir.is_dir() {
        return Ok(PolicyWatcher {
            _parent: None,
            _dir: Arc::new(Mutex::new(Some(watch_dir(&dir, name, tx)?))),
        });
    }
    let parent = dir
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let slot = Arc::new(Mutex::new(None));
    let (appeared_tx, mut appeared) = mpsc::channel::<()>(1);
    let wanted = dir.clone();
    let mut parent_watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !event.kind.is_access()
                && event.paths.iter().any(|p| p == &wanted)
            {
                let _ = appeared_tx.try_send(());
            }
        })
        .context("creating the policy directory watcher")?;
    parent_watcher
        .watch(&parent, RecursiveMode::NonRecursive)
        .with_context(|| {
            format!(
                "watching {} for {} to appear",
                parent.display(),
                dir.display()
            )
        })?;
    tracing::info!(
        "{} does not exist; watching {} for it to appear",
        dir.display(),
        parent.display()
    );
    let task_slot = Arc::clone(&slot);
    tokio::spawn(async move {
        while appeared.recv().await.is_some() {
            if !dir.is_dir() {
                continue;
            }
            match watch_dir(&dir, name.clone(), tx.clone()) {
                Ok(watcher) => {
                    *task_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
                    tracing::info!("{} appeared; watching it", dir.display());
                    // The policy may have been written before the watch began.
                    let _ = tx.try_send(());
                    return;
                }
                Err(err) => tracing::warn!("{err:#}"),
            }
        }
    });
    Ok(PolicyWatcher {
        _parent: Some(parent_watcher),
        _dir: slot,
    })
}

fn watch_dir(
    dir: &Path,
    name: Option<std::ffi::OsString>,
    tx: mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher> {
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
        .watch(dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok(watcher)
}
