//! Group commit: one flusher thread per store flushes on behalf of every writer waiting, so
//! one fsync covers a whole burst of concurrent writes, and nobody holds a lock across it.
//!
//! A writer first puts its data into sled, then takes a *ticket* ([`GroupCommit::request`]):
//! the flush that starts after that covers it. It then waits for that flush either by
//! blocking ([`GroupCommit::sync`], for the store's synchronous callers) or asynchronously
//! ([`GroupCommit::durable_later`], for an async handler, which thus parks no thread while
//! the disk works). A ticket may also carry work to run once it is durable, in the flusher
//! (announcing the commit to subscribers): it runs whether or not anyone still waits.
//!
//! The flusher sleeps while nothing is asked of it. It flushes every ticket issued when the
//! flush starts; the tickets taken during a flush go into the next one, started as soon as
//! the current one ends. A blocking writer waits on one of two condition variables, by the
//! number of the flush that covers it, so that a flush wakes only the writers it covered.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::StoreError;

/// What a flush does: `sled::Db::flush` for a store.
pub(super) type Flush = Box<dyn Fn() -> sled::Result<()> + Send>;

/// Work that runs in the flusher once a ticket's flush ended, before the writers it covered
/// are woken: `true` if it succeeded.
pub(super) type AfterFlush = Box<dyn FnOnce(bool) + Send>;

pub(super) struct GroupCommit {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// The flusher waits here while there is nothing to flush.
    work: Condvar,
    /// Blocking writers, by the number of the flush that covers them, modulo 2.
    done: [Condvar; 2],
    /// What the flushes reached, for asynchronous writers.
    progress: watch::Sender<Progress>,
    /// See [`super::StoreOptions::commit_delay`].
    delay: Duration,
}

/// Every ticket up to `durable` is on disk; every ticket up to `failed_upto` was in a flush
/// that failed (and is on disk only if a later flush succeeded: then `durable` covers it).
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    durable: u64,
    failed_upto: u64,
}

#[derive(Default)]
struct State {
    /// Tickets handed out.
    requested: u64,
    /// Every ticket up to this one was in a flush that ended.
    covered: u64,
    progress: Progress,
    /// The error of the last failed flush.
    error: Option<sled::Error>,
    /// A flush is under way, for every ticket up to `upto` (while it waits for more
    /// writers to join, for every ticket: `u64::MAX`).
    flushing: bool,
    upto: u64,
    /// Flushes started so far; the one under way, if any, is number `flushes`.
    flushes: u64,
    /// The flusher waits for work (so a new ticket must wake it).
    idle: bool,
    stop: bool,
    /// Work to run once a ticket's flush ended, in ticket order.
    after: VecDeque<(u64, AfterFlush)>,
}

impl GroupCommit {
    /// Starts the flusher thread, which calls `flush` for each group of tickets, waiting
    /// `delay` first when a burst is under way (see [`super::StoreOptions::commit_delay`]).
    pub(super) fn start(flush: Flush, delay: Duration) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            work: Condvar::new(),
            done: [Condvar::new(), Condvar::new()],
            progress: watch::channel(Progress::default()).0,
            delay,
        });
        let flusher = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.run(&flush)
            })
            .expect("spawning the store's flusher thread");
        Self {
            shared,
            flusher: Some(flusher),
        }
    }

    /// Takes a ticket for the data the caller has written so far; `after`, if given, runs
    /// in the flusher once the flush that covers the ticket ended.
    pub(super) fn request(&self, after: Option<AfterFlush>) -> u64 {
        let mut s = self.shared.lock();
        s.requested += 1;
        let ticket = s.requested;
        if let Some(f) = after {
            s.after.push_back((ticket, f));
        }
        if s.idle {
            s.idle = false;
            self.shared.work.notify_one();
        }
        ticket
    }

    /// Takes a ticket and blocks until it is durable.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.wait(self.request(None))
    }

    /// Blocks until `ticket` is durable, or fails with the error of the flush that covered it.
    pub(super) fn wait(&self, ticket: u64) -> Result<(), StoreError> {
        let mut s = self.shared.lock();
        loop {
            if s.progress.durable >= ticket {
                return Ok(());
            }
            if s.progress.failed_upto >= ticket {
                return Err(flush_error(s.error.as_ref()));
            }
            // In the flush under way, or else in the next one.
            let covering = if s.flushing && s.upto >= ticket {
                s.flushes
            } else {
                s.flushes + 1
            };
            s = self.shared.done[(covering % 2) as usize]
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Resolves once `ticket` is durable, or with the error of the flush that covered it.
    /// Needs no runtime thread while it waits.
    pub(super) fn durable_later(
        &self,
        ticket: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let mut progress = self.shared.progress.subscribe();
        let shared = Arc::clone(&self.shared);
        async move {
            let reached = progress
                .wait_for(|p| p.durable >= ticket || p.failed_upto >= ticket)
                .await
                .map(|p| *p);
            match reached {
                Ok(p) if p.durable >= ticket => Ok(()),
                // (The sender lives as long as `shared`: never closed while this waits.)
                _ => Err(flush_error(shared.lock().error.as_ref())),
            }
        }
    }

    /// `(requested, durable, flushes started)`, for tests.
    #[cfg(test)]
    pub(super) fn numbers(&self) -> (u64, u64, u64) {
        let s = self.shared.lock();
        (s.requested, s.progress.durable, s.flushes)
    }
}

impl Drop for GroupCommit {
    /// Flushes what was asked (the flusher drains before it stops), then ends the flusher.
    fn drop(&mut self) {
        {
            let mut s = self.shared.lock();
            s.stop = true;
            self.shared.work.notify_one();
        }
        if let Some(flusher) = self.flusher.take() {
            // A panic in the flusher has been reported already.
            let _ = flusher.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The flusher's loop: one flush per group of tickets, until stopped with nothing left.
    fn run(&self, flush: &Flush) {
        let mut s = self.lock();
        loop {
            if s.requested <= s.covered {
                if s.stop {
                    return;
                }
                s.idle = true;
                s = self.work.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            s.flushing = true;
            s.flushes += 1;
            if !self.delay.is_zero() && s.requested > s.covered + 1 {
                // Several writers wait: a burst. Let more of it join this flush; whoever
                // comes meanwhile is in it.
                s.upto = u64::MAX;
                drop(s);
                std::thread::sleep(self.delay);
                s = self.lock();
            }
            s.upto = s.requested;
            let (number, upto) = (s.flushes, s.upto);
            drop(s);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(flush))
                .unwrap_or_else(|_| Err(sled::Error::ReportableBug("the flush panicked".into())));
            s = self.lock();
            s.flushing = false;
            s.covered = upto;
            let ok = result.is_ok();
            match result {
                Ok(()) => s.progress.durable = s.progress.durable.max(upto),
                Err(e) => {
                    s.progress.failed_upto = s.progress.failed_upto.max(upto);
                    s.error = Some(e);
                }
            }
            let ready = s.after.iter().take_while(|(t, _)| *t <= upto).count();
            let after: Vec<AfterFlush> = s.after.drain(..ready).map(|(_, f)| f).collect();
            let progress = s.progress;
            drop(s);
            // The work first (the announcements), then the writers: a launch is announced
            // before its answer leaves.
            for f in after {
                // A panic there is reported (the hook prints it); the flusher goes on.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ok)));
            }
            self.progress.send_replace(progress);
            self.done[(number % 2) as usize].notify_all();
            s = self.lock();
        }
    }
}

fn flush_error(e: Option<&sled::Error>) -> StoreError {
    StoreError::Sled(
        e.cloned()
            .unwrap_or_else(|| sled::Error::ReportableBug("the group flush failed".into())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    fn started(flush: impl Fn() -> sled::Result<()> + Send + 'static) -> GroupCommit {
        GroupCommit::start(Box::new(flush), Duration::ZERO)
    }

    /// A flush that succeeds and counts its calls, and its counter.
    fn counting() -> (Flush, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let flush = Box::new({
            let calls = Arc::clone(&calls);
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        (flush, calls)
    }

    #[test]
    fn every_concurrent_write_becomes_durable() {
        let gc = started(|| {
            std::thread::yield_now();
            Ok(())
        });
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..50 {
                        gc.sync().unwrap();
                    }
                });
            }
        });
        let (requested, durable, flushes) = gc.numbers();
        assert_eq!((requested, durable), (800, 800));
        assert!(flushes <= 800);
    }

    /// Slow flushes, some failing, under many writers: every write returns (no writer waits
    /// on a flush nobody does), some with the error of the flush that covered them, and
    /// the writes share flushes.
    #[test]
    fn every_writer_returns_also_when_flushes_fail() {
        let attempts = Arc::new(AtomicU64::new(0));
        let gc = started({
            let attempts = Arc::clone(&attempts);
            move || {
                std::thread::sleep(Duration::from_micros(200));
                if attempts.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
                    Err(sled::Error::Unsupported("injected".into()))
                } else {
                    Ok(())
                }
            }
        });
        let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..24 {
                s.spawn(|| {
                    for _ in 0..40 {
                        match gc.sync() {
                            Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                assert!(e.to_string().contains("storage"), "{e}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                });
            }
        });
        let (requested, _, flushes) = gc.numbers();
        assert_eq!(requested, 960);
        let (ok, failed) = (ok.into_inner(), failed.into_inner());
        assert_eq!(ok + failed, 960);
        assert!(failed > 0 && ok > 0, "{ok} ok, {failed} failed");
        assert!(flushes < 960, "{flushes} flushes: writes shared them");
    }

    /// With a commit delay, the writers that arrive while a burst's flush waits share it.
    /// Two tickets taken at once stand for a burst already waiting.
    #[test]
    fn a_commit_delay_gathers_the_writers_arriving_meanwhile_into_one_flush() {
        let run = |delay: Duration| {
            let (flush, flushes) = counting();
            let gc = GroupCommit::start(flush, delay);
            {
                let mut s = gc.shared.lock();
                s.requested += 2;
                s.idle = false;
                gc.shared.work.notify_one();
            }
            // The flush is waiting (or, without a delay, done) once it is counted.
            while gc.numbers().2 == 0 {
                std::thread::yield_now();
            }
            std::thread::scope(|s| {
                for _ in 0..5 {
                    s.spawn(|| gc.sync().unwrap());
                }
            });
            assert_eq!(gc.numbers().1, 7);
            flushes.load(Ordering::SeqCst)
        };
        assert_eq!(run(Duration::from_millis(500)), 1, "one flush for all");
        assert!(
            run(Duration::ZERO) >= 2,
            "without a delay the latecomers flush again"
        );
    }

    #[test]
    fn one_flush_covers_the_writers_waiting_for_it() {
        use std::sync::OnceLock;
        const WRITERS: u64 = 16;
        let flushes = Arc::new(AtomicU64::new(0));
        let shared: Arc<OnceLock<Arc<Shared>>> = Arc::default();
        // Each flush is held open until every writer holds a ticket, so the first one runs
        // while all the others queue behind it, however the threads are scheduled.
        let gc = started({
            let (flushes, shared) = (Arc::clone(&flushes), Arc::clone(&shared));
            move || {
                flushes.fetch_add(1, Ordering::SeqCst);
                let shared = shared.get().expect("set before any ticket");
                let deadline = Instant::now() + Duration::from_secs(30);
                while shared.lock().requested < WRITERS {
                    assert!(Instant::now() < deadline, "the writers never all arrived");
                    std::thread::yield_now();
                }
                Ok(())
            }
        });
        shared.set(Arc::clone(&gc.shared)).ok().unwrap();
        std::thread::scope(|s| {
            for _ in 0..WRITERS {
                s.spawn(|| gc.sync().unwrap());
            }
        });
        assert_eq!(gc.numbers().1, WRITERS);
        // The first flush covers the tickets issued before it began (at least one); those
        // taken during it are all covered by the one after. Without sharing: WRITERS.
        let flushes = flushes.load(Ordering::SeqCst);
        assert!(
            flushes <= 2,
            "{flushes} flushes for {WRITERS} concurrent writes"
        );
    }

    /// An async wait resolves once its ticket's flush ended, with that flush's outcome; the
    /// work given with a ticket runs after that flush and before its waiters wake, in ticket
    /// order, also when nobody awaits the ticket.
    #[tokio::test]
    async fn async_waits_and_the_work_after_a_flush_follow_its_outcome() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gc = started({
            let fail = Arc::clone(&fail);
            move || {
                if fail.load(Ordering::SeqCst) {
                    Err(sled::Error::Unsupported("injected".into()))
                } else {
                    Ok(())
                }
            }
        });
        let ran = Arc::new(Mutex::new(Vec::new()));
        let note = |what: &'static str| -> AfterFlush {
            let ran = Arc::clone(&ran);
            Box::new(move |ok| ran.lock().unwrap().push((what, ok)))
        };
        let first = gc.request(Some(note("first")));
        let second = gc.request(Some(note("second")));
        gc.durable_later(second).await.unwrap();
        gc.durable_later(first).await.unwrap();
        assert_eq!(
            *ran.lock().unwrap(),
            [("first", true), ("second", true)],
            "run after the flush, in ticket order"
        );
        fail.store(true, Ordering::SeqCst);
        let third = gc.request(Some(note("third")));
        let err = gc.durable_later(third).await.unwrap_err();
        assert!(format!("{err:?}").contains("injected"), "{err:?}");
        // Not awaited: its work runs anyway.
        fail.store(false, Ordering::SeqCst);
        gc.request(Some(note("fourth")));
        drop(gc);
        assert_eq!(
            ran.lock().unwrap()[2..],
            [("third", false), ("fourth", true)]
        );
    }

    /// A store dropped with tickets outstanding flushes them first.
    #[test]
    fn dropping_flushes_what_was_asked() {
        let (flush, flushes) = counting();
        let gc = GroupCommit::start(flush, Duration::ZERO);
        let shared = Arc::clone(&gc.shared);
        for _ in 0..3 {
            gc.request(None);
        }
        drop(gc);
        assert_eq!(shared.lock().progress.durable, 3);
        assert!(flushes.load(Ordering::SeqCst) >= 1);
    }
}
