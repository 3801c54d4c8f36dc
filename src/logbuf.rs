//! `serve`'s log writer: every thread appends its formatted lines to one shared buffer, and a
//! thread of its own writes the buffer to stderr. A busy server then makes one `write(2)` per
//! batch of lines instead of one per line, and no request waits on the pipe (a launch logs a
//! line; the write was 3.5 % of the server's CPU in `bench launches`).
//!
//! What it keeps of a plain stderr writer:
//! - every line, whole and in order (one lock orders the appends; a line is appended in one
//!   piece, as `tracing-subscriber` formats an event and then writes it at once);
//! - back-pressure: when the buffer holds [`MAX_PENDING`] bytes (stderr is slow or stuck),
//!   writers wait for the writer thread, as they would wait on a full pipe;
//! - nothing held back: the writer thread starts on the first line after it went idle, so a
//!   line is written at once on a quiet server. A panic writes what is pending before its
//!   message; the [`Flusher`] guard writes the rest when `serve` returns.
//!
//! A `kill -9` loses the lines appended but not yet written: on a quiet server none, on a
//! busy one the last batch (at most a few milliseconds of lines).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Above this many pending bytes, writers wait for the writer thread.
pub const MAX_PENDING: usize = 1 << 20;

/// The writer that `tracing_subscriber::fmt().with_writer(…)` takes (`MakeWriter`).
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// Writes what is pending and stops the writer thread when dropped.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer thread waits here for lines.
    lines: Condvar,
    /// Writers wait here while the buffer is full.
    room: Condvar,
    /// Where the lines go; locked while a batch is written.
    sink: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// The writer thread waits on `lines` (so an append must wake it).
    idle: bool,
    stop: bool,
}

impl Batched {
    /// A writer of stderr, and the guard that flushes it.
    pub fn stderr() -> (Self, Flusher) {
        let (batched, flusher) = Self::to(Box::new(std::io::stderr()));
        let shared = Arc::clone(&batched.shared);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            shared.write_pending();
            previous(info);
        }));
        (batched, flusher)
    }

    /// A writer of `sink` (tests use a buffer), and the guard that flushes it.
    pub fn to(sink: Box<dyn Write + Send>) -> (Self, Flusher) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            lines: Condvar::new(),
            room: Condvar::new(),
            sink: Mutex::new(sink),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || worker.run())
            .ok();
        let writes_itself = thread.is_none();
        if writes_itself {
            // No thread to be had: every append writes at once, as a plain writer would.
            lock(&shared.state).stop = true;
        }
        (
            Self {
                shared: Arc::clone(&shared),
            },
            Flusher { shared, thread },
        )
    }
}

impl Shared {
    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut state = lock(&self.state);
                while state.pending.is_empty() && !state.stop {
                    state.idle = true;
                    state = self
                        .lines
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.idle = false;
                if state.pending.is_empty() {
                    return;
                }
            }
            // The sink first, then the lines: whoever takes lines writes them before anyone
            // takes later ones (see `write_pending`).
            let mut sink = lock(&self.sink);
            std::mem::swap(&mut batch, &mut lock(&self.state).pending);
            self.room.notify_all();
            write_to(&mut **sink, &batch);
            batch.clear();
        }
    }

    fn append(&self, line: &[u8]) {
        let mut state = lock(&self.state);
        while state.pending.len() >= MAX_PENDING && !state.stop {
            state = self
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.pending.extend_from_slice(line);
        if state.stop {
            // No writer thread any more: this thread writes.
            drop(state);
            self.write_pending();
        } else if state.idle {
            state.idle = false;
            self.lines.notify_one();
        }
    }

    /// Writes what is pending now, from the calling thread (a panic's, or after the stop).
    fn write_pending(&self) {
        let mut sink = lock(&self.sink);
        let batch = std::mem::take(&mut lock(&self.state).pending);
        self.room.notify_all();
        write_to(&mut **sink, &batch);
    }
}

fn write_to(sink: &mut dyn Write, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // Like `eprintln!` without the panic: a log line that cannot be written is dropped.
    let _ = sink.write_all(bytes);
    let _ = sink.flush();
}

impl Drop for Flusher {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Lines appended after the thread's last look.
        self.shared.write_pending();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One event's writer: `tracing-subscriber` writes a formatted line through it at once.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
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
    use std::time::Duration;

    /// A sink that records every write, slowly, so that lines pile up behind it.
    #[derive(Clone, Default)]
    struct Slow(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(2));
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Events from several threads through a real `tracing` subscriber, as `serve` logs.
    #[test]
    fn every_line_arrives_whole_and_in_order_in_fewer_writes() {
        let sink = Slow::default();
        let (batched, flusher) = Batched::to(Box::new(sink.clone()));
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(batched)
                .with_ansi(false)
                .finish(),
        );
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let dispatch = dispatch.clone();
                std::thread::spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        for i in 0..500 {
                            let pad = "x".repeat(i % 50);
                            tracing::info!("thread {t} line {i} {pad}.");
                        }
                    });
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flusher);
        let writes = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(writes.concat()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.split_once(&format!("thread {t} line ")))
                .map(|(_, rest)| {
                    let (i, xs) = rest.split_once(' ').unwrap();
                    let i: usize = i.parse().unwrap();
                    assert_eq!(xs, format!("{}.", "x".repeat(i % 50)), "a torn line");
                    i
                })
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "thread {t}'s order");
        }
        assert!(
            writes.len() < 2000,
            "{} writes for 2000 lines: nothing was batched",
            writes.len()
        );
    }

    #[test]
    fn a_quiet_line_is_written_without_waiting_for_more() {
        let sink = Slow::default();
        let (batched, _flusher) = Batched::to(Box::new(sink.clone()));
        use tracing_subscriber::fmt::MakeWriter;
        batched.make_writer().write_all(b"alone\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was held back"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.0.lock().unwrap().concat(), b"alone\n");
    }

    #[test]
    fn a_stuck_sink_holds_writers_at_the_bound() {
        /// Blocks every write until released.
        struct Stuck(Arc<(Mutex<bool>, Condvar)>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (m, c) = &*self.0;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = c.wait(open).unwrap();
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (batched, flusher) = Batched::to(Box::new(Stuck(Arc::clone(&gate))));
        let line = vec![b'x'; 64 * 1024];
        let writer = {
            let b = batched.clone();
            let line = line.clone();
            std::thread::spawn(move || {
                use tracing_subscriber::fmt::MakeWriter;
                for _ in 0..64 {
                    b.make_writer().write_all(&line).unwrap();
                }
            })
        };
        // The first batch is stuck in the sink; the buffer fills to the bound and stays.
        std::thread::sleep(Duration::from_millis(300));
        let pending = lock(&batched.shared.state).pending.len();
        assert!(!writer.is_finished(), "the writer did not wait");
        assert!(
            pending <= MAX_PENDING + line.len(),
            "{pending} bytes pending"
        );
        let (m, c) = &*gate;
        *m.lock().unwrap() = true;
        c.notify_all();
        writer.join().unwrap();
        drop(flusher);
        assert!(lock(&batched.shared.state).pending.is_empty());
    }
}
