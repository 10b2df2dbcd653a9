//! Running one task's command: `sh -c` in its own process group, stdout and stderr streamed to
//! the terminal (in whole lines when labelled) and captured to files at the same time, with a
//! timeout and cancellation that kill the whole group.

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use cuenv_actors::result::Log;

use super::output::{Printer, Stream};

/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long pipes may take to close after SIGKILL reached every process holding them.
const KILLED_GRACE: Duration = Duration::from_millis(200);

/// How long the task's output may stay open after its shell exited (a process it started in
/// the background still holding it) before the rest of its process group is stopped.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    /// The task's name (for prefixes and errors).
    pub(crate) task: String,
    /// The shell, as [`shell`] found it.
    pub(crate) shell: Arc<Path>,
    /// The command or script text.
    pub(crate) shell_text: String,
    /// Arguments passed to it as `$1`, `$2`, ...
    pub(crate) args: Vec<String>,
    /// Where it runs.
    pub(crate) cwd: PathBuf,
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

/// Runs `spawn` to completion and returns how it ended with its captured stdout and stderr.
/// `cancel` flips to `true` on Ctrl-C.
pub(crate) async fn run(
    spawn: &Spawn,
    printer: &Arc<Printer>,
    mut cancel: watch::Receiver<bool>,
) -> io::Result<(Ended, Log, Log)> {
    let mut child = Command::new(&*spawn.shell)
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
    let _live = group.map(LiveGroup::register);
    let (stop, stopped) = watch::channel(false);
    let task = &spawn.task;
    let out = child.stdout.take();
    let stdout = pump(out, task.clone(), Stream::Stdout, Arc::clone(printer), stopped.clone());
    let err = child.stderr.take();
    let stderr = pump(err, task.clone(), Stream::Stderr, Arc::clone(printer), stopped);
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
    let logs = async { (stdout.await, stderr.await) };
    tokio::pin!(logs);
    let (stdout, stderr) = match tokio::time::timeout(DRAIN_GRACE, &mut logs).await {
        Ok(logs) => logs,
        Err(_) => {
            // The shell is gone, yet something it started keeps the pipes open: a task ends
            // with its shell, so the rest of its group is stopped (and a holder outside the
            // group is no longer read from).
            printer.note(
                &spawn.task,
                "ended, but processes it started still held its output open; stopping them",
            );
            stop_leftovers(group, &mut logs, &stop).await
        }
    };
    Ok((ended, stdout.map_err(io::Error::other)??, stderr.map_err(io::Error::other)??))
}

/// The process groups of the tasks running in this process, for [`kill_every_task`].
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// A running task's process group, listed in [`LIVE_GROUPS`] while the task runs.
struct LiveGroup(i32);

impl LiveGroup {
    fn register(group: i32) -> Self {
        LIVE_GROUPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(group);
        LiveGroup(group)
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        let mut groups = LIVE_GROUPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        groups.retain(|group| *group != self.0);
    }
}

/// SIGKILL to the process group of every task still running: for a process about to exit
/// without waiting for them (a second Ctrl-C). Each task runs in its own group, which the
/// terminal's signal does not reach, so without this they would outlive the run.
pub fn kill_every_task() {
    let groups = LIVE_GROUPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for group in groups.iter() {
        // SAFETY: killpg only sends a signal; the group id is one of our children's groups.
        unsafe { libc::killpg(*group, libc::SIGKILL) };
    }
}

/// SIGTERM, then SIGKILL, to what is left of the task's process group, until `logs` reach end
/// of file; past that, `stop` tells the pumps to finish with what they have.
async fn stop_leftovers<T>(
    group: Option<i32>,
    logs: &mut std::pin::Pin<&mut impl Future<Output = T>>,
    stop: &watch::Sender<bool>,
) -> T {
    // SIGKILL takes effect at once: what still holds the pipes after it is outside the group.
    for (signal, grace) in [(libc::SIGTERM, KILL_GRACE), (libc::SIGKILL, KILLED_GRACE)] {
        if let Some(group) = group {
            // SAFETY: killpg only sends a signal; the group id is our child's own group.
            unsafe { libc::killpg(group, signal) };
        }
        if let Ok(logs) = tokio::time::timeout(grace, &mut *logs).await {
            return logs;
        }
    }
    let _ = stop.send(true);
    logs.await
}

/// The `sh` that `PATH` names, looked up once per run: given a bare `sh`, every spawn would try
/// each `PATH` entry in turn (a failed `execve` per entry, measured at 8 per task here). A bare
/// `sh` when none is found, so that the spawn reports the problem.
pub(crate) fn shell() -> Arc<Path> {
    let found = crate::task::find_executable("sh", std::env::var_os("PATH").as_deref());
    Arc::from(found.unwrap_or_else(|| PathBuf::from("sh")))
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

/// Logs up to this size stay in memory; a larger log spills to its capture file.
const SPILL_AT: usize = 1 << 20;

/// Bytes of a spilled log gathered before each write to its capture file.
const SPILL_BUFFER: usize = 256 * 1024;

/// Copies a pipe to the printer and to the capture, in whole lines when the printer labels
/// them, else as the bytes arrive (a lone task's prompt, progress bar or row of test dots
/// shows before its line ends). The capture is in memory while small, in a temp file once it
/// grows past [`SPILL_AT`] (a large log is never held in memory). A spilled
/// log is handed to the cache, which removes the file once it has stored it (or chose not to).
/// Once `stop` turns true, the pump ends with what it has read (a partial last line
/// included), whether or not the pipe reached end of file.
fn pump(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    task: String,
    stream: Stream,
    printer: Arc<Printer>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<io::Result<Log>> {
    tokio::spawn(async move {
        let mut memory = Vec::new();
        let mut spilled: Option<(BufWriter<tokio::fs::File>, PathBuf)> = None;
        let Some(pipe) = pipe else { return Ok(Log::Bytes(memory)) };
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let whole_lines = printer.labels();
        let mut piece = Vec::with_capacity(256);
        let mut stopped = false;
        while !stopped {
            piece.clear();
            tokio::select! {
                // Cancelling the read keeps what it read in `piece`.
                read = read_piece(&mut reader, &mut piece, whole_lines) => {
                    read?;
                    if piece.is_empty() {
                        break;
                    }
                }
                Ok(_) = stop.wait_for(|stop| *stop) => {
                    stopped = true;
                    if piece.is_empty() {
                        break;
                    }
                }
            }
            printer.output(&task, stream, &piece);
            match &mut spilled {
                Some((capture, _)) => capture.write_all(&piece).await?,
                None if memory.len() + piece.len() > SPILL_AT => {
                    let (std_file, path) = tempfile::Builder::new()
                        .prefix("cuenv-log-")
                        .tempfile()?
                        .keep()
                        .map_err(|error| error.error)?;
                    // Buffered: each write to a tokio file is a trip to a blocking thread.
                    let file = tokio::fs::File::from_std(std_file);
                    let mut capture = BufWriter::with_capacity(SPILL_BUFFER, file);
                    capture.write_all(&memory).await?;
                    capture.write_all(&piece).await?;
                    memory = Vec::new();
                    spilled = Some((capture, path));
                }
                None => memory.extend_from_slice(&piece),
            }
        }
        match spilled {
            Some((mut capture, path)) => {
                capture.flush().await?;
                Ok(Log::Spilled(path))
            }
            None => Ok(Log::Bytes(memory)),
        }
    })
}

/// The most of one line that is held in memory: a longer line is passed on in pieces of this
/// size (the capture stays byte for byte; the terminal shows each piece as a line).
const MAX_LINE: usize = 64 * 1024;

/// Appends to `piece` what the pipe holds, up to [`MAX_LINE`] bytes: with `whole_lines`, as
/// many whole lines as have arrived (waiting for the end of an unfinished one, unless it is
/// longer than [`MAX_LINE`]); otherwise whatever has arrived, newline or not. At end of file
/// it appends what is left (nothing: the pipe is done). Cancel-safe like `read_until`: bytes
/// read before a cancellation are in `piece`.
async fn read_piece<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    piece: &mut Vec<u8>,
    whole_lines: bool,
) -> io::Result<()> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(());
        }
        let window = &available[..available.len().min(MAX_LINE - piece.len())];
        let taken = if whole_lines {
            window.iter().rposition(|byte| *byte == b'\n').map_or(window.len(), |at| at + 1)
        } else {
            window.len()
        };
        piece.extend_from_slice(&window[..taken]);
        reader.consume(taken);
        if !whole_lines || piece.ends_with(b"\n") || piece.len() >= MAX_LINE {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The pieces `read_piece` makes of `chunks`, written into a pipe one at a time, each read
    /// as far as it goes before the next is written (a read that waits for more is given up
    /// after 50 ms, keeping what it read), then to the end of the pipe.
    async fn pieces(chunks: &[&[u8]], whole_lines: bool) -> Vec<Vec<u8>> {
        let (mut writer, pipe) = tokio::io::duplex(256 * 1024);
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let (mut pieces, mut piece) = (Vec::new(), Vec::new());
        for chunk in chunks {
            writer.write_all(chunk).await.unwrap();
            let wait = Duration::from_millis(50);
            while let Ok(read) =
                tokio::time::timeout(wait, read_piece(&mut reader, &mut piece, whole_lines)).await
            {
                read.unwrap();
                pieces.push(std::mem::take(&mut piece));
            }
        }
        drop(writer);
        read_piece(&mut reader, &mut piece, whole_lines).await.unwrap();
        pieces.push(piece);
        pieces
    }

    #[tokio::test]
    async fn labelled_output_is_read_in_whole_lines_and_a_lone_tasks_as_it_comes() {
        // Labelled: every line that has arrived at once; an unfinished one waits for its end.
        let got = pieces(&[b"a\nb\nc", b"d\n", b"e"], true).await;
        assert_eq!(got, [&b"a\nb\n"[..], b"cd\n", b"e"]);
        // Lone: whatever has arrived (the last read meets the end of the pipe: nothing).
        let got = pieces(&[b"a\nb\nc", b"d\n", b"e"], false).await;
        assert_eq!(got, [&b"a\nb\nc"[..], b"d\n", b"e", b""]);
        // A line longer than MAX_LINE comes in pieces of MAX_LINE bytes; lines before it come
        // whole, never cut at the limit.
        let long = [b"x".repeat(MAX_LINE - 10), b"\n".to_vec(), b"y".repeat(MAX_LINE + 5)].concat();
        let got = pieces(&[&long, b"\n"], true).await;
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_LINE - 9, MAX_LINE, 6, 0]);
        assert_eq!(got.concat(), [long, b"\n".to_vec()].concat());
    }

    #[test]
    fn the_shell_is_found_once_on_path() {
        let shell = shell();
        assert!(shell.is_absolute(), "{}", shell.display());
        assert_eq!(shell.file_name().and_then(|name| name.to_str()), Some("sh"));
        let meta = std::fs::metadata(&shell).unwrap();
        assert!(meta.permissions().mode() & 0o111 != 0);
    }
}
