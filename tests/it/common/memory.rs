//! Memory measurements: the guards that keep other tests from allocating in this process
//! while one measures, and [`rss_mb`].

use std::sync::{Mutex, MutexGuard};

/// Which tests hold the process: `Some(n)` while `n` [`shared_memory`] guards are out
/// (proxies in this process count, see [`ProxyUnderTest`]), `None` while one test
/// measures memory ([`exclusive_memory`]).
///
/// [`ProxyUnderTest`]: super::ProxyUnderTest
static MEMORY: Mutex<Option<usize>> = Mutex::new(Some(0));
static MEMORY_FREED: std::sync::Condvar = std::sync::Condvar::new();

thread_local! {
    /// Whether this thread holds the exclusive guard (its own proxies then take none).
    static MEASURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn memory_state() -> MutexGuard<'static, Option<usize>> {
    MEMORY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that measures this process's memory: while it lives, no other test
/// runs an in-process proxy or holds a [`shared_memory`] guard.
pub struct ExclusiveMemory(());

/// Waits until no shared guard is out and takes the process for a measurement.
///
/// The in-process proxy allocates with glibc's malloc here (the binary uses jemalloc),
/// whose mmap threshold rises to the size of each large block freed, after which large
/// buffers come from the heap and up to twice that stays resident after they are freed.
/// The threshold is pinned at its default, once, so large buffers are mapped and
/// unmapped as they come and go and the resident size follows what the proxy holds.
pub fn exclusive_memory() -> ExclusiveMemory {
    static PINNED: std::sync::Once = std::sync::Once::new();
    PINNED.call_once(|| {
        // SAFETY: mallopt only sets a malloc parameter; any value is valid to pass.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    });
    let mut state = memory_state();
    while *state != Some(0) {
        state = MEMORY_FREED.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    *state = None;
    MEASURING.with(|m| m.set(true));
    ExclusiveMemory(())
}

impl Drop for ExclusiveMemory {
    fn drop(&mut self) {
        MEASURING.with(|m| m.set(false));
        *memory_state() = Some(0);
        MEMORY_FREED.notify_all();
    }
}

/// Held while a test (or a proxy) allocates in this process without measuring; many at
/// once. Taken again from a thread that already holds one, it never blocks (a measuring
/// test waits until every guard is gone), so nesting cannot deadlock.
pub struct SharedMemory {
    counted: bool,
}

/// Waits while a measurement runs (unless this thread is the one measuring).
pub fn shared_memory() -> SharedMemory {
    if MEASURING.with(std::cell::Cell::get) {
        return SharedMemory { counted: false };
    }
    let mut state = memory_state();
    loop {
        match state.as_mut() {
            Some(n) => {
                *n += 1;
                return SharedMemory { counted: true };
            }
            None => {
                state = MEMORY_FREED.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.counted {
            let mut state = memory_state();
            if let Some(n) = state.as_mut() {
                *n -= 1;
            }
            drop(state);
            MEMORY_FREED.notify_all();
        }
    }
}

/// Resident memory of this process, in MB.
pub fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}
