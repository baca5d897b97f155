//! The container test's workload: reads the file named by its first
//! argument (a pod's ServiceAccount token), says how many bytes it read
//! (never the content), then waits for SIGTERM so that its cgroup, which
//! names its pod, is still there when the agent resolves it.

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: cri-reader FILE");
        std::process::exit(2);
    };
    match std::fs::read(&path) {
        Ok(bytes) => println!("read {} bytes from {}", bytes.len(), path.display()),
        Err(err) => {
            eprintln!("cannot read {}: {err}", path.display());
            std::process::exit(1);
        }
    }
    extern "C" fn on_stop(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    let stop = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only calls _exit.
    unsafe {
        libc::signal(libc::SIGTERM, stop);
        libc::signal(libc::SIGINT, stop);
    }
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}
