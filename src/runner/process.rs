//! Running one task's command: `sh -c` in its own process group, stdout and stderr streamed to
//! the terminal line by line and captured to files at the same time, with a timeout and
//! cancellation that kill the whole group.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::output::{Printer, Stream};

/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    /// The task's name (for prefixes and errors).
    pub(crate) task: String,
    /// The command or script text.
    pub(crate) shell_text: String,
    /// Arguments passed to it as `$1`, `$2`, ...
    pub(crate) args: Vec<String>,
    /// Where it runs.
    pub(crate) cwd: PathBuf,
    /// Where stdout and stderr are captured.
    pub(crate) stdout_file: PathBuf,
    pub(crate) stderr_file: PathBuf,
    /// Kill it after this long.
    pub(crate) timeout: Option<Duration>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It exited (or was killed by a signal, as 128 + signal).
    Exited(i32),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// The run was cancelled (Ctrl-C) and it was killed.
    Cancelled,
}

/// Runs `spawn` to completion. `cancel` flips to `true` on Ctrl-C.
pub(crate) async fn run(
    spawn: &Spawn,
    printer: &Arc<Printer>,
    mut cancel: watch::Receiver<bool>,
) -> io::Result<Ended> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&spawn.shell_text)
        .arg("sh")
        .args(&spawn.args)
        .current_dir(&spawn.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot start `sh` in {}: {error}", spawn.cwd.display()),
            )
        })?;
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let stdout = pump(
        child.stdout.take(),
        &spawn.stdout_file,
        spawn.task.clone(),
        Stream::Stdout,
        Arc::clone(printer),
    );
    let stderr = pump(
        child.stderr.take(),
        &spawn.stderr_file,
        spawn.task.clone(),
        Stream::Stderr,
        Arc::clone(printer),
    );
    let deadline = async {
        match spawn.timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    let cancelled = async move {
        // A dropped sender means nobody can cancel any more: wait forever.
        if cancel.wait_for(|cancelled| *cancelled).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(exit_code(status?)),
        () = deadline => { kill_group(group, &mut child).await; Ended::TimedOut }
        () = cancelled => { kill_group(group, &mut child).await; Ended::Cancelled }
    };
    // The logs are complete once both pipes reach end of file.
    stdout.await.map_err(io::Error::other)??;
    stderr.await.map_err(io::Error::other)??;
    Ok(ended)
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(1)
}

/// SIGTERM to the whole group, then SIGKILL after a grace period.
async fn kill_group(group: Option<i32>, child: &mut Child) {
    if let Some(group) = group {
        // SAFETY: killpg only sends a signal; the group id is our child's own group.
        unsafe { libc::killpg(group, libc::SIGTERM) };
        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
            // SAFETY: as above.
            unsafe { libc::killpg(group, libc::SIGKILL) };
        }
    }
    let _ = child.kill().await;
    let _ = child.wait().await;
}

/// Copies a pipe to its capture file and, line by line, to the printer.
fn pump(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    file: &Path,
    task: String,
    stream: Stream,
    printer: Arc<Printer>,
) -> tokio::task::JoinHandle<io::Result<()>> {
    let file = file.to_owned();
    tokio::spawn(async move {
        let mut capture = tokio::fs::File::create(&file).await?;
        let Some(pipe) = pipe else { return Ok(()) };
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            capture.write_all(&line).await?;
            printer.line(&task, stream, &line);
        }
        capture.flush().await
    })
}
