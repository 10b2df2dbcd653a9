//! What the user sees: task output streamed line by line (prefixed by the task name when more
//! than one task runs), status notes, a progress line on a terminal, and the final summary.

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
/// lacks one, as [`push_line`] does line by line. A closed `to` (`cuenv run | head`) ends the
/// copy quietly.
fn copy_labelled(from: &mut impl Read, to: &mut impl Write, label: &str) -> io::Result<()> {
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
            return Ok(());
        }
    }
    if !at_line_start {
        let _ = to.write_all(b"\n");
    }
    Ok(())
}

/// Serialises everything written to the terminal.
pub(crate) struct Printer {
    /// Task names, for a stable colour and the prefix width.
    names: Vec<String>,
    prefix: bool,
    color: bool,
    width: usize,
    progress: ProgressBar,
    /// Held while one line is written, so lines of parallel tasks never interleave.
    lock: Mutex<()>,
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
        Printer { names, prefix, color, width, progress, lock: Mutex::new(()) }
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

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let _guard = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.progress.suspend(|| {
            // A closed stdout (`cuenv run | head`) is not an error of the run.
            let _ = match stream {
                Stream::Stdout => io::stdout().lock().write_all(bytes),
                Stream::Stderr => io::stderr().lock().write_all(bytes),
            };
        });
    }

    /// One line of a task's output (the trailing newline is added if missing).
    pub(crate) fn line(&self, task: &str, stream: Stream, line: &[u8]) {
        let label = self.label(task);
        let mut out = Vec::with_capacity(label.len() + line.len() + 1);
        push_line(&mut out, &label, line);
        self.write(stream, &out);
    }

    /// Replays a captured log: every line labelled, written at once, so a replayed log is
    /// never interleaved with other tasks' lines.
    pub(crate) fn replay(&self, task: &str, stream: Stream, log: &[u8]) {
        if log.is_empty() {
            return;
        }
        let label = self.label(task);
        let mut out = Vec::with_capacity(log.len() + label.len() + 1);
        for line in log.split_inclusive(|byte| *byte == b'\n') {
            push_line(&mut out, &label, line);
        }
        self.write(stream, &out);
    }

    /// Replays a captured log from a file, a piece at a time (a large log is never held in
    /// memory), labelled as [`Printer::replay`] does and, likewise, not interleaved with other
    /// tasks' lines: other writers wait meanwhile. Blocking: call from a blocking thread.
    pub(crate) fn replay_file(
        &self,
        task: &str,
        stream: Stream,
        file: &mut File,
    ) -> io::Result<()> {
        let label = self.label(task);
        let _guard = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut copied = Ok(());
        self.progress.suspend(|| {
            copied = match stream {
                Stream::Stdout => copy_labelled(file, &mut io::stdout().lock(), &label),
                Stream::Stderr => copy_labelled(file, &mut io::stderr().lock(), &label),
            };
        });
        copied
    }

    /// A status note about a task (cache hit, failure), on stderr.
    pub(crate) fn note(&self, task: &str, message: &str) {
        let text = if self.color { format!("{DIM}{message}{RESET}") } else { message.to_owned() };
        let label = if self.prefix { self.label(task) } else { format!("{task}: ") };
        self.write(Stream::Stderr, format!("{label}{text}\n").as_bytes());
    }

    /// A line of the run summary, on stderr.
    pub(crate) fn summary(&self, line: &str) {
        self.write(Stream::Stderr, format!("{line}\n").as_bytes());
    }

    /// Updates the progress line (when there is one): `done` finished, `running` named.
    pub(crate) fn progress<'a>(&self, done: usize, running: impl IntoIterator<Item = &'a String>) {
        if self.progress.is_hidden() {
            return;
        }
        self.progress.set_position(done as u64);
        let running: Vec<&str> = running.into_iter().map(String::as_str).collect();
        self.progress.set_message(running.join(", "));
    }

    /// Removes the progress line.
    pub(crate) fn finish(&self) {
        self.progress.finish_and_clear();
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
            copy_labelled(&mut Trickle(log), &mut copied, "t | ").unwrap();
            assert_eq!(String::from_utf8_lossy(&copied), String::from_utf8_lossy(&replayed));
        }
    }
}
