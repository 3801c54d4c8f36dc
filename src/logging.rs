//! Log lines to stderr in batches: one writer thread writes every line formatted since its
//! last write in one `write`, so that a burst of log lines costs a few system calls (and a
//! few wake-ups of whoever reads the pipe, journald or a terminal), not one each on the
//! thread that logged.
//!
//! A line is handed over in memory. An idle writer woken by it waits [`LINGER`] for the
//! lines logged right after, then writes them all; while it writes, the next lines gather
//! for its next write. The writer is at most [`MAX_PENDING`] bytes behind: past that, a
//! logging thread waits for it, as it would for a full pipe. Dropping the [`WriterThread`]
//! writes what is left, and a panic first writes the lines logged before it, so that the
//! panic message comes after them. A `kill -9` loses about the last [`LINGER`] of lines.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;

/// Bytes of log lines the writer may be behind before a logging thread waits for it.
pub const MAX_PENDING: usize = 1 << 20;

/// How long the writer, woken by a line, waits for more before it writes: a line reaches
/// stderr at most this much later than it would unbatched.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// The writer thread's handle, for `tracing_subscriber::fmt().with_writer(...)`.
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines.
    lines: Condvar,
    /// Logging threads wait here for room, and a flush (or the panic hook) for the lines
    /// before it to be written.
    written: Condvar,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// The writer sleeps on `lines` (so a new line must wake it).
    idle: bool,
    /// The writer has taken lines it has not written yet.
    writing: bool,
    stop: bool,
}

/// The writer thread, which ends (after writing every line) when this is dropped.
pub struct WriterThread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The batched writer of this process, once [`Batched::start`] ran: the panic hook writes
/// its pending lines first.
static CURRENT: OnceLock<Arc<Shared>> = OnceLock::new();

impl Batched {
    /// Starts the writer thread (once per process: a second call gets a writer of its own,
    /// which the panic hook does not know). Keep the [`WriterThread`] for the process's
    /// life: dropping it writes what is left and ends the thread.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start() -> std::io::Result<(Self, WriterThread)> {
        let (batched, thread) = Self::start_with(std::io::stderr())?;
        if CURRENT.set(Arc::clone(&batched.shared)).is_ok() {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Not in the writer itself, which would wait for its own write.
                let writer = std::thread::current().name() == Some("log-writer");
                if let Some(s) = CURRENT.get().filter(|_| !writer) {
                    s.wait_written();
                }
                previous(info);
            }));
        }
        Ok((batched, thread))
    }

    fn start_with(out: impl Write + Send + 'static) -> std::io::Result<(Self, WriterThread)> {
        let shared = Arc::new(Shared::default());
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(out))?;
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            WriterThread {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line`, after waiting for room if the writer is far behind.
    fn push(&self, line: &[u8]) {
        let mut s = self.lock();
        while s.pending.len() >= MAX_PENDING && !s.stop {
            s = self.written.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.pending.extend_from_slice(line);
        if s.idle {
            s.idle = false;
            self.lines.notify_one();
        }
    }

    /// Waits until every line queued so far is written (or the writer ended).
    fn wait_written(&self) {
        let mut s = self.lock();
        while (!s.pending.is_empty() || s.writing) && !s.stop {
            if s.idle {
                s.idle = false;
                self.lines.notify_one();
            }
            s = self.written.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The writer thread: takes every pending line and writes them in one go, until stopped
    /// with nothing left.
    fn run(&self, mut out: impl Write) {
        let mut batch = Vec::new();
        loop {
            {
                let mut s = self.lock();
                s.writing = false;
                self.written.notify_all();
                let mut slept = false;
                while s.pending.is_empty() {
                    if s.stop {
                        return;
                    }
                    s.idle = true;
                    s = self.lines.wait(s).unwrap_or_else(PoisonError::into_inner);
                    slept = true;
                }
                if slept && !s.stop {
                    // Woken by a line: let the lines logged right after it join this write
                    // (nobody wakes the writer meanwhile).
                    drop(s);
                    std::thread::sleep(LINGER);
                    s = self.lock();
                }
                s.idle = false;
                s.writing = true;
                batch.clear();
                std::mem::swap(&mut batch, &mut s.pending);
            }
            // As tracing's own stderr writer does, a failed write loses these lines and
            // nothing else: there is nowhere else to say so.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            // Keep one batch's capacity, not a burst's.
            if batch.capacity() > MAX_PENDING {
                batch = Vec::new();
            }
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        {
            let mut s = self.shared.lock();
            s.stop = true;
            self.shared.lines.notify_one();
        }
        if let Some(t) = self.thread.take() {
            // The thread writes what is pending before it sees `stop`.
            let _ = t.join();
        }
    }
}

/// One event's writer: tracing's fmt layer formats an event, then hands it over in one
/// `write_all`.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.wait_written();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records each `write_all` as one batch, shared with the test.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn joined(r: &Recorder) -> Vec<u8> {
        r.0.lock().unwrap().concat()
    }

    #[test]
    fn every_line_arrives_in_order_and_whole_after_the_end() {
        let out = Recorder::default();
        let (w, thread) = Batched::start_with(out.clone()).unwrap();
        let mut expected = Vec::new();
        for i in 0..10_000 {
            let line = format!("line {i}\n");
            expected.extend_from_slice(line.as_bytes());
            tracing_subscriber::fmt::MakeWriter::make_writer(&w)
                .write_all(line.as_bytes())
                .unwrap();
        }
        drop(thread);
        assert_eq!(joined(&out), expected);
    }

    #[test]
    fn flush_waits_until_the_line_is_written() {
        let out = Recorder::default();
        let (w, _thread) = Batched::start_with(out.clone()).unwrap();
        let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
        line.write_all(b"one\n").unwrap();
        line.flush().unwrap();
        assert_eq!(joined(&out), b"one\n");
    }

    #[test]
    fn lines_from_many_threads_are_never_torn() {
        let out = Recorder::default();
        let (w, thread) = Batched::start_with(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let line = format!("thread {t} line {i:05} {}\n", "x".repeat(40));
                        tracing_subscriber::fmt::MakeWriter::make_writer(&w)
                            .write_all(line.as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(thread);
        let text = String::from_utf8(joined(&out)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            assert_eq!(mine.len(), 5_000, "thread {t}");
            for (i, l) in mine.iter().enumerate() {
                assert_eq!(*l, format!("thread {t} line {i:05} {}", "x".repeat(40)));
            }
        }
    }

    /// An output whose first write waits until the test lets it go.
    struct Gate {
        out: Recorder,
        entered: std::sync::mpsc::Sender<()>,
        release: Option<std::sync::mpsc::Receiver<()>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(release) = self.release.take() {
                self.entered.send(()).unwrap();
                release.recv().unwrap();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_lines_logged_during_a_write_go_out_in_the_next_one() {
        let out = Recorder::default();
        let (entered, on_enter) = std::sync::mpsc::channel();
        let (let_go, release) = std::sync::mpsc::channel();
        let gate = Gate {
            out: out.clone(),
            entered,
            release: Some(release),
        };
        let (w, thread) = Batched::start_with(gate).unwrap();
        let log = |line: &str| {
            tracing_subscriber::fmt::MakeWriter::make_writer(&w)
                .write_all(line.as_bytes())
                .unwrap();
        };
        log("first\n");
        on_enter.recv().unwrap();
        for i in 0..100 {
            log(&format!("during {i}\n"));
        }
        let_go.send(()).unwrap();
        drop(thread);
        let writes = out.0.lock().unwrap().clone();
        let during: String = (0..100).map(|i| format!("during {i}\n")).collect();
        assert_eq!(writes, vec![b"first\n".to_vec(), during.into_bytes()]);
    }
}
