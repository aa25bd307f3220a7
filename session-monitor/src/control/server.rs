//! The daemon side of the control socket.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, watch},
};

use super::{
    protocol::{MAX_REQUEST_BYTES, Request, Response, decode_request},
    refusals::{self, RefusalSummary, Refusals},
};

/// Who may use the socket: root always; members of `group` too when set.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub group: Option<(String, u32)>,
}

/// The peer of a connection, from SO_PEERCRED.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// A request for the daemon core, or a refusal it must audit.
pub enum Incoming {
    Request {
        request: Request,
        caller: Caller,
        reply: oneshot::Sender<Response>,
    },
    /// The first refusal of a uid in an interval.
    Refused { caller: Caller, reason: String },
    /// The further refusals of a uid in an interval, counted.
    RefusedMore(RefusalSummary),
}

pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket and serves it. `access` may change (policy reload).
    pub fn start(
        path: &Path,
        access: watch::Receiver<Access>,
        tx: mpsc::Sender<Incoming>,
    ) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!("another daemon is already serving {}", path.display());
            }
            fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        // Anyone may connect, so that refused attempts reach the daemon and are
        // audited; every request is authorized by the caller's SO_PEERCRED.
        fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
        let refusals = Arc::new(Mutex::new(Refusals::default()));
        tokio::spawn(summarise_refusals(Arc::clone(&refusals), tx.clone()));
        tokio::spawn(accept_loop(listener, access, tx, refusals));
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Sends the counted refusals to the core once their interval is over.
async fn summarise_refusals(refusals: Arc<Mutex<Refusals>>, tx: mpsc::Sender<Incoming>) {
    let mut tick = tokio::time::interval(refusals::INTERVAL / 5);
    loop {
        tick.tick().await;
        let due = lock(&refusals).due(Instant::now());
        for summary in due {
            if tx.send(Incoming::RefusedMore(summary)).await.is_err() {
                return;
            }
        }
    }
}

fn lock(refusals: &Mutex<Refusals>) -> std::sync::MutexGuard<'_, Refusals> {
    refusals.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(
    listener: UnixListener,
    access: watch::Receiver<Access>,
    tx: mpsc::Sender<Incoming>,
    refusals: Arc<Mutex<Refusals>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let access = access.borrow().clone();
        let tx = tx.clone();
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            if let Err(err) = serve(stream, &access, tx, &refusals).await {
                tracing::debug!("control connection: {err:#}");
            }
        });
    }
}

fn allowed(caller: &Caller, access: &Access) -> bool {
    if caller.uid == 0 {
        return true;
    }
    let Some((_, gid)) = &access.group else {
        return false;
    };
    if caller.gid == *gid {
        return true;
    }
    // Supplementary groups of the caller's user.
    nix::unistd::User::from_uid(caller.uid.into())
        .ok()
        .flatten()
        .and_then(|user| {
            let name = std::ffi::CString::new(user.name).ok()?;
            nix::unistd::getgrouplist(&name, user.gid).ok()
        })
        .is_some_and(|groups| groups.iter().any(|g| g.as_raw() == *gid))
}

async fn serve(
    stream: UnixStream,
    access: &Access,
    tx: mpsc::Sender<Incoming>,
    refusals: &Mutex<Refusals>,
) -> Result<()> {
    let cred = stream.peer_cred()?;
    let caller = Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    };
    let (mut read, mut write) = stream.into_split();
    let request = if allowed(&caller, access) {
        read_request(&mut read).await
    } else {
        Err("permission denied: the control socket is for root and the control group only".into())
    };
    let response = match request {
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            tx.send(Incoming::Request {
                request,
                caller,
                reply,
            })
            .await?;
            answer
                .await
                .unwrap_or_else(|_| Response::error("the daemon is shutting down"))
        }
        Err(reason) => {
            // Only the first refusal of a uid in an interval reaches the core: a
            // flood neither grows the audit log nor queues before root's requests.
            if lock(refusals).note(caller.uid, &reason, Instant::now()) {
                let _ = tx
                    .send(Incoming::Refused {
                        caller,
                        reason: reason.clone(),
                    })
                    .await;
            }
            Response::error(reason)
        }
    };
    let mut line = serde_json::to_string(&response)?;
    drop(response);
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    write.shutdown().await?;
    let large = line.len() >= LARGE_ANSWER;
    drop(line);
    if large {
        release_free_memory();
    }
    // Closing with unread input makes the kernel reset the connection, and the
    // client would lose the answer; read (a bounded amount of) what it still sends.
    let mut rest = (&mut read).take(DRAIN_LIMIT);
    let mut sink = tokio::io::sink();
    let drain = tokio::io::copy(&mut rest, &mut sink);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    Ok(())
}

/// From this size on, an answer's memory is given back to the system once it is
/// sent: `sessions --json` with ten thousand sessions builds some 40 MiB of JSON
/// values and text, which the allocator would otherwise keep for good (the
/// daemon's RSS went from 27 to 72 MiB with the first listing).
const LARGE_ANSWER: usize = 256 * 1024;

/// Returns the allocator's free pages to the system.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// At most this much of an oversized or refused request is read and thrown away.
const DRAIN_LIMIT: u64 = 4 * 1024 * 1024;

/// Reads one request line, refusing oversized or malformed input with a reason.
async fn read_request(read: &mut tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut limited = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        limited.read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| "request timed out".to_string())?
    .map_err(|e| format!("reading request: {e}"))?;
    debug_assert_eq!(read, line.len());
    decode_request(&line)
}
