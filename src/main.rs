fn main() {
    // One malloc arena for the whole runner. Its lease thread (job/net.rs)
    // would otherwise get an arena of its own for a few SQLite allocations:
    // ~200 KB more resident in every waiting runner, measured with smaps.
    // Before any thread exists, so that no arena but the main one is made.
    repeatr::sys::malloc_arena_max(1);
    std::process::exit(repeatr::main());
}
