//! The CLI side of the control socket.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixStream,
};

use super::protocol::{Request, Response};

/// Sends one request to the daemon and decodes its answer as the request's reply.
pub async fn request<R: serde::de::DeserializeOwned>(
    socket: &Path,
    request: &Request,
) -> Result<R> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot reach the daemon at {} (is `session-monitor run` running, and are you allowed to use its socket?)",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    // The daemon answers a refused caller without reading the request, so a failed
    // write is reported only when no answer explains it.
    let sent = async {
        write.write_all(line.as_bytes()).await?;
        write.shutdown().await
    }
    .await;
    let mut answer = String::new();
    let read = BufReader::new(read).read_line(&mut answer).await;
    if answer.is_empty() {
        if let Err(err) = sent {
            bail!("sending the request to the daemon: {err}");
        }
        read.context("reading the daemon's answer")?;
        bail!("the daemon closed the connection without answering");
    }
    let response: Response =
        serde_json::from_str(&answer).context("the daemon's answer is not valid JSON")?;
    if !response.ok {
        bail!(
            "{}",
            response.error.unwrap_or_else(|| "request failed".into())
        );
    }
    serde_json::from_value(response.data)
        .with_context(|| format!("decoding the daemon's answer to `{}`", request.name()))
}
