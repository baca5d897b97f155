//! The container test's pause program: the process that holds a pod
//! sandbox's namespaces, like the kubelet's `pause` image (which cannot be
//! pulled here). It waits for SIGTERM or SIGINT and exits 0; as PID 1 of a
//! pod it also reaps orphans.

fn main() {
    extern "C" fn on_stop(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    extern "C" fn on_child(_: libc::c_int) {
        // SAFETY: waitpid with WNOHANG is async-signal-safe.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    }
    let stop = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let child = on_child as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing handlers that only call async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGTERM, stop);
        libc::signal(libc::SIGINT, stop);
        libc::signal(libc::SIGCHLD, child);
    }
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}
