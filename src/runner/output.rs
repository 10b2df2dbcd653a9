//! What the user sees: task output streamed live (line by line, prefixed by the task name, when
//! more than one task runs), status notes, a progress line on a terminal, and the final summary.
//!
//! A lone task's output passes through byte for byte, live or replayed: no label, no newline
//! added, a long line never cut, so `cuenv run gen > out.json` writes what the command wrote.
//! Labelled output is for reading: every line, and every piece of a line too long to buffer,
//! gets its label and ends with a newline, so parallel tasks' lines never run together.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Which stream a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

const COLORS: [&str; 6] = ["\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[31m"];
const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

/// Appends `label`, `line` and the newline `line` lacks, if it lacks one.
fn push_line(out: &mut Vec<u8>, label: &str, line: &[u8]) {
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(line);
    if !line.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// Copies `from` to `to` with `label` before every line, and a final newline if the last line
/// lacks one, as [`push_line`] does line by line; with no label, the bytes as they are. A closed
/// `to` (`cuenv run | head`) ends the copy quietly. Returns whether the copy ended mid-line.
fn copy_labelled(from: &mut impl Read, to: &mut impl Write, label: &str) -> io::Result<bool> {
    let mut chunk = vec![0; 256 * 1024];
    let mut out = Vec::with_capacity(chunk.len() + 4096);
    let mut at_line_start = true;
    loop {
        let count = match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        out.clear();
        for line in chunk[..count].split_inclusive(|byte| *byte == b'\n') {
            if at_line_start {
                out.extend_from_slice(label.as_bytes());
            }
            out.extend_from_slice(line);
            at_line_start = line.ends_with(b"\n");
        }
        if to.write_all(&out).is_err() {
            return Ok(false);
        }
    }
    if label.is_empty() {
        // As the bytes are: a last piece without its newline waits in a line-buffered `to`.
        let _ = to.flush();
        return Ok(!at_line_start);
    }
    if !at_line_start {
        let _ = to.write_all(b"\n");
    }
    Ok(false)
}

/// Serialises everything written to the terminal.
pub(crate) struct Printer {
    /// Task names, for a stable colour and the prefix width.
    names: Vec<String>,
    prefix: bool,
    color: bool,
    width: usize,
    progress: ProgressBar,
    /// The tasks whose processes run now, as the progress line names them. A std mutex, held
    /// only to update the set and the line.
    executing: Mutex<BTreeSet<String>>,
    /// Held while one line is written, so lines of parallel tasks never interleave; says which
    /// streams a lone task's output left mid-line.
    lock: Mutex<MidLine>,
}

/// Whether the last bytes written to stdout and stderr ended mid-line (a lone task's output,
/// passed through as it is), so a note or the summary starts on a line of its own.
#[derive(Debug, Default)]
struct MidLine {
    stdout: bool,
    stderr: bool,
}

impl MidLine {
    fn of(&mut self, stream: Stream) -> &mut bool {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }
}

impl Printer {
    /// A printer for `names`; `prefix` when more than one task may print. Colour only on a
    /// terminal and without `NO_COLOR`; a progress line only when stderr is a terminal.
    pub(crate) fn new(names: Vec<String>, prefix: bool, no_color: bool) -> Self {
        let color = !no_color && io::stdout().is_terminal();
        let width = names.iter().map(String::len).max().unwrap_or(0).min(32);
        let progress = if io::stderr().is_terminal() && names.len() > 1 {
            let bar = ProgressBar::with_draw_target(
                Some(names.len() as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Printer {
            names,
            prefix,
            color,
            width,
            progress,
            executing: Mutex::default(),
            lock: Mutex::default(),
        }
    }

    fn label(&self, task: &str) -> String {
        if !self.prefix {
            return String::new();
        }
        let padded = format!("{task:<width$} | ", width = self.width);
        if self.color {
            let index = self.names.iter().position(|name| name == task).unwrap_or(0);
            format!("{}{padded}{RESET}", COLORS[index % COLORS.len()])
        } else {
            padded
        }
    }

    /// Writes task output as it is (see [`MidLine`]).
    fn write(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut mid_line = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *mid_line.of(stream) = !bytes.ends_with(b"\n");
        self.progress.suspend(|| {
            // A closed stdout (`cuenv run | head`) is not an error of the run.
            // stdout is line-buffered: a piece without its newline is flushed to be seen.
            let _ = match stream {
                Stream::Stdout => {
                    let mut stdout = io::stdout().lock();
                    stdout.write_all(bytes).and_then(|()| stdout.flush())
                }
                Stream::Stderr => io::stderr().lock().write_all(bytes),
            };
        });
    }

    /// Writes cuenv's own line (a note, the summary) on stderr, on a line of its own.
    fn write_own(&self, line: &str) {
        let mut mid_line = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = if std::mem::take(&mut mid_line.stderr) { "\n" } else { "" };
        // One write: stderr is unbuffered, and `writeln!` would send the newline on its own.
        let text = format!("{start}{line}\n");
        self.progress.suspend(|| {
            let _ = io::stderr().lock().write_all(text.as_bytes());
        });
    }

    /// Whether task output is labelled, and so must come in whole lines; a lone task's may
    /// come in any pieces.
    pub(crate) fn labels(&self) -> bool {
        self.prefix
    }

    /// Task output, live or replayed from a captured log. A lone task's passes as it is, in
    /// any piece. A labelled task's is whole lines (or part of one too long to buffer), each
    /// labelled and ending with a newline (added if missing), written at once, so it is never
    /// interleaved with other tasks' lines.
    pub(crate) fn output(&self, task: &str, stream: Stream, bytes: &[u8]) {
        if !self.prefix {
            return self.write(stream, bytes);
        }
        if bytes.is_empty() {
            return;
        }
        let label = self.label(task);
        let mut out = Vec::with_capacity(bytes.len() + label.len() + 1);
        for line in bytes.split_inclusive(|byte| *byte == b'\n') {
            push_line(&mut out, &label, line);
        }
        self.write(stream, &out);
    }

    /// Replays a captured log from a file, a piece at a time (a large log is never held in
    /// memory), labelled as [`Printer::output`] does and, likewise, not interleaved with other
    /// tasks' lines: other writers wait meanwhile. Blocking: call from a blocking thread.
    pub(crate) fn replay_file(
        &self,
        task: &str,
        stream: Stream,
        file: &mut File,
    ) -> io::Result<()> {
        let label = self.label(task);
        let mut mid_line = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut copied = Ok(false);
        self.progress.suspend(|| {
            copied = match stream {
                Stream::Stdout => copy_labelled(file, &mut io::stdout().lock(), &label),
                Stream::Stderr => copy_labelled(file, &mut io::stderr().lock(), &label),
            };
        });
        *mid_line.of(stream) = copied?;
        Ok(())
    }

    /// A status note about a task (cache hit, failure), on stderr.
    pub(crate) fn note(&self, task: &str, message: &str) {
        let text = if self.color { format!("{DIM}{message}{RESET}") } else { message.to_owned() };
        let label = if self.prefix { self.label(task) } else { format!("{task}: ") };
        self.write_own(&format!("{label}{text}"));
    }

    /// A line of the run summary, on stderr.
    pub(crate) fn summary(&self, line: &str) {
        self.write_own(line);
    }

    /// Updates the progress line's count (when there is one): `done` tasks finished.
    pub(crate) fn progress(&self, done: usize) {
        self.progress.set_position(done as u64);
    }

    /// Names `task` on the progress line while its process runs: the line shows what
    /// executes, not the tasks waiting for a job slot, a key or a lookup. Dropping the guard
    /// takes the name off.
    pub(crate) fn executing(&self, task: &str) -> Executing<'_> {
        self.update_executing(|executing| executing.insert(task.to_owned()));
        Executing { printer: self, task: task.to_owned() }
    }

    fn update_executing(&self, change: impl FnOnce(&mut BTreeSet<String>) -> bool) {
        if self.progress.is_hidden() {
            return;
        }
        let mut executing = self.executing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if change(&mut executing) {
            let names: Vec<&str> = executing.iter().map(String::as_str).collect();
            self.progress.set_message(names.join(", "));
        }
    }

    /// Removes the progress line.
    pub(crate) fn finish(&self) {
        self.progress.finish_and_clear();
    }
}

/// A task named on the progress line while its process runs (see [`Printer::executing`]).
pub(crate) struct Executing<'a> {
    printer: &'a Printer,
    task: String,
}

impl Drop for Executing<'_> {
    fn drop(&mut self) {
        self.printer.update_executing(|executing| executing.remove(&self.task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields its bytes a few at a time, so lines straddle the reads.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let count = self.0.len().min(buf.len()).min(3);
            buf[..count].copy_from_slice(&self.0[..count]);
            self.0 = &self.0[count..];
            Ok(count)
        }
    }

    #[test]
    fn a_copied_log_is_labelled_like_a_replayed_one() {
        for log in [&b"one\ntwo\n\nthree"[..], b"", b"\n", b"no newline", b"a\nb\n"] {
            let mut replayed = Vec::new();
            for line in log.split_inclusive(|byte| *byte == b'\n') {
                push_line(&mut replayed, "t | ", line);
            }
            let mut copied = Vec::new();
            assert!(!copy_labelled(&mut Trickle(log), &mut copied, "t | ").unwrap());
            assert_eq!(String::from_utf8_lossy(&copied), String::from_utf8_lossy(&replayed));
            // Unlabelled, the bytes as they are.
            let mut copied = Vec::new();
            let mid_line = copy_labelled(&mut Trickle(log), &mut copied, "").unwrap();
            assert_eq!(
                (copied.as_slice(), mid_line),
                (log, !log.is_empty() && !log.ends_with(b"\n"))
            );
        }
    }
}
