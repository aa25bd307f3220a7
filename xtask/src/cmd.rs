//! Running external commands. Every command that changes something is printed before
//! it runs, so that a failed set-up can be understood and repeated by hand.

use std::{
    ffi::OsStr,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, Result, bail};
use cargo_metadata::{Artifact, Message};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
}

/// The cargo that runs us (`cargo xtask` sets `CARGO`), in the workspace root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

/// Runs a cargo build `command` (`build`, `test --no-run`, ...) and returns the
/// artifacts it reports, so that callers find binaries where cargo put them
/// (`CARGO_TARGET_DIR` and profiles honoured). Diagnostics still reach the terminal,
/// rendered on stderr; fails, naming `what`, if cargo does.
pub fn cargo_artifacts(what: &str, command: &mut Command) -> Result<Vec<Artifact>> {
    command
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    println!("    $ {}", display(command));
    let mut child = command
        .spawn()
        .with_context(|| format!("{what}: cannot start `{}`", display(command)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut artifacts = Vec::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        if let Message::CompilerArtifact(artifact) =
            message.with_context(|| format!("{what}: reading cargo's output"))?
        {
            artifacts.push(artifact);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("{what}: waiting for cargo"))?;
    if !status.success() {
        bail!("{what}: `{}` failed ({status})", display(command));
    }
    Ok(artifacts)
}

/// True when running as root (installing, mounting and the tests need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Announces a step of a task.
pub fn step(message: impl std::fmt::Display) {
    println!("==> {message}");
}

/// Reports that a step has nothing to do.
pub fn done_already(message: impl std::fmt::Display) {
    println!("    ok: {message}");
}

/// A command as a shell would show it, with the environment it sets.
pub fn display(command: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
        {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let env = command
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), quote(v?))));
    let words = std::iter::once(quote(command.get_program())).chain(command.get_args().map(quote));
    env.chain(words).collect::<Vec<_>>().join(" ")
}

/// Runs `command` in the foreground (output goes to the terminal); fails, naming
/// `what`, unless it exits successfully.
pub fn run(what: &str, command: &mut Command) -> Result<()> {
    println!("    $ {}", display(command));
    let status = command
        .status()
        .with_context(|| format!("{what}: cannot start `{}`", display(command)))?;
    if !status.success() {
        bail!("{what}: `{}` failed ({status})", display(command));
    }
    Ok(())
}

/// Runs `command` quietly and returns its output, whatever its exit status.
pub fn output(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", display(command)))
}

/// Runs `command` quietly and returns its standard output if it succeeded.
pub fn stdout_if_ok(command: &mut Command) -> Option<String> {
    let out = output(command).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first `name` found in `PATH`, then in `fallbacks`.
pub fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
