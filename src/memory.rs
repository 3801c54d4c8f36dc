//! Giving freed heap memory back to the system.
//!
//! glibc's allocator keeps what a burst freed (a thousand launches, a batch of updates) in
//! its per-thread arenas, and returns only the top of the main heap by itself: after bursts
//! on many threads the process keeps its peak size even though little of it is in use.
//! [`spawn_trimmer`] asks it, every `period`, to return every free page (`malloc_trim`).
//! A pass costs about a millisecond per few hundred MB of heap; it runs on the blocking pool.
//!
//! [`tune`] keeps large blocks on the heap: by default glibc maps every block over 128 KiB
//! (raised up to 32 MiB as such blocks are freed) with its own `mmap` and unmaps it when
//! freed, so a buffer that is built again for every batch (an ACCEPT of a thousand tasks, a
//! page of clusters, sled's I/O buffers) is zero-filled by the kernel page by page each
//! time. From the heap, it reuses pages that the next trim returns if they stay free.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often `paas serve` trims.
pub const TRIM_PERIOD: Duration = Duration::from_secs(5);

/// Blocks up to this size come from the heap rather than from their own `mmap`: glibc's
/// most (`HEAP_MAX_SIZE / 2` on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Sets the allocator up for a long-running server (see the module docs); call it first
/// thing in `main`, before any thread starts. Whether it took effect (only glibc's allocator
/// has the knob).
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a parameter of the allocator, under its own lock.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every `period` until `shutdown`. Does nothing where the allocator is not glibc's.
pub fn spawn_trimmer(period: Duration, shutdown: CancellationToken, tracker: &TaskTracker) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    tracker.spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {
                    let _ = tokio::task::spawn_blocking(trim).await;
                }
            }
        }
    });
}

/// Returns the free pages of every arena to the system; whether any were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only takes the allocator's own locks and has no preconditions.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the trimmer is for: after a burst of many small blocks is freed, a trim gives
    /// pages back (glibc keeps them otherwise).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_trim_after_a_freed_burst_returns_pages() {
        let burst: Vec<Vec<u8>> = (0..200_000).map(|i| vec![(i % 251) as u8; 200]).collect();
        // Keep every hundredth block, so that the freed memory is not one top chunk that
        // glibc would return by itself.
        let kept: Vec<Vec<u8>> = burst.into_iter().step_by(100).collect();
        assert!(
            trim(),
            "a trim after freeing ~40 MB in small blocks returns some pages"
        );
        assert_eq!(kept.len(), 2_000);
    }

    /// After [`tune`], a 4 MiB block comes from the heap, not from a mapping of its own
    /// (glibc's default threshold, 128 KiB to start with, would map it).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn tuned_large_blocks_are_not_mapped_one_by_one() {
        // SAFETY: mallinfo2 reads the allocator's statistics under its lock.
        let mapped = || unsafe { libc::mallinfo2() }.hblks;
        assert!(tune());
        let before = mapped();
        let block = vec![1u8; 4 << 20];
        // Other tests' threads may free a mapped block meanwhile, hence `<=`.
        assert!(mapped() <= before, "the block has no mapping of its own");
        assert_eq!(block.len(), 4 << 20);
    }
}
