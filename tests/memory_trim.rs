//! The trimmer gives a freed burst's pages back to the system (`paas::memory::trim`). In a
//! test binary of its own, with one test, so that no other thread allocates meanwhile.

/// Resident pages of this process, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident field");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).expect("page size")
}

#[test]
fn a_trim_returns_the_pages_a_freed_burst_left() {
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let before = resident_bytes();
    let burst: Vec<Vec<u8>> = (0..400_000).map(|i| vec![(i % 251) as u8; 200]).collect();
    let peak = resident_bytes();
    // Keep every thousandth block: the freed memory is spread over the heap, not one block
    // at its end that any allocator would give back by itself. (jemalloc cannot give back a
    // page that still holds a live block: keeping every hundredth, all of them do.)
    let kept: Vec<Vec<u8>> = burst.into_iter().step_by(1000).collect();
    let freed = resident_bytes();
    assert!(paas::memory::trim(), "the allocator took the trim");
    let trimmed = resident_bytes();
    eprintln!(
        "RSS: {:.1} MB before, {:.1} MB at the burst's peak, {:.1} MB once freed, {:.1} MB trimmed",
        mb(before),
        mb(peak),
        mb(freed),
        mb(trimmed)
    );
    assert!(peak > before + (60 << 20), "the burst took ~90 MB");
    assert!(
        trimmed + (40 << 20) < freed.max(peak),
        "a trim returns most of the freed burst"
    );
    assert!(
        trimmed < before + (30 << 20),
        "what is left is about what was kept"
    );
    assert_eq!(kept.len(), 400);
}
