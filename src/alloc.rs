//! The allocator, and the crate's only `unsafe` code: a call into jemalloc's control
//! interface, which has no safe binding for it.

/// Return freed heap memory to the operating system. (The `redsplit` binary allocates
/// with jemalloc, which otherwise keeps freed pages for a while in case they are reused.)
pub fn release_free_memory() {
    // SAFETY: `arena.<MALLCTL_ARENAS_ALL = 4096>.purge` reads and writes no value, so
    // every pointer is null and the length zero; the name is NUL-terminated.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}
