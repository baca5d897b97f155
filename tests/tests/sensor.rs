//! The kernel sensor on the real kernel, in its opt-in syscall path-match
//! mode (token opens by path suffix, reads with exact byte counts), and
//! connects to registered API-server endpoints (IPv4, IPv6, IPv4-mapped
//! IPv6, refused). The default, fanotify file side is in `fanotify.rs`.

use std::{
    io::Read as _,
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::Command,
};

use tokenwatch_host::sensor::{SensorConfig, event::EventKind};
use tokenwatch_tests::{Harness, KernelFeature, TokenVolume, connect, cpath, file, kernel_has};

const TOKEN: &[u8] = b"eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl";

/// The opt-in syscall path-match mode, watching the volume's token by inode.
fn config_watching(volume: &TokenVolume) -> SensorConfig {
    SensorConfig {
        watch_files: vec![volume.real_file.clone()],
        syscall_path_match: true,
        ..SensorConfig::default()
    }
}

fn syscall_mode() -> SensorConfig {
    SensorConfig {
        syscall_path_match: true,
        ..SensorConfig::default()
    }
}

fn me() -> u32 {
    std::process::id()
}

/// Opens `path` with `openat(AT_FDCWD, ...)` through std, reads it whole, closes it.
fn read_whole(path: &std::path::Path) -> usize {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .expect("open token")
        .read_to_end(&mut buf)
        .expect("read token")
}

#[test]
fn token_opens_by_every_route_are_seen_with_exact_reads() {
    let volume = TokenVolume::new(TOKEN);
    if !kernel_has(
        "token_opens_by_every_route",
        KernelFeature::SyscallPathMatch,
    ) {
        return;
    }
    let Some(mut h) = Harness::start("token_opens_by_every_route", config_watching(&volume)) else {
        return;
    };
    let (dev, ino) = volume.file_id();
    let is_token_open = |path: String| {
        move |e: &tokenwatch_host::sensor::SensorEvent| {
            e.kind == EventKind::TokenOpen
                && e.process.tgid == me()
                && file(e).is_some_and(|f| {
                    f.ino == ino && f.dev == dev && f.path.as_deref() == Some(&path)
                })
        }
    };

    // 1. Absolute path through both symlinks: inode and suffix both match.
    let path = volume.token_path();
    assert_eq!(read_whole(&path), TOKEN.len());
    let open = h.wait_for(
        "open by absolute path",
        is_token_open(path.display().to_string()),
    );
    let detail = file(&open).unwrap();
    assert_eq!(detail.matched, vec!["inode", "suffix"]);
    let fd = detail.fd;
    let read = h.wait_for("the read of the whole token", |e| {
        e.kind == EventKind::TokenRead
            && e.process.tgid == me()
            && file(e).is_some_and(|f| f.fd == fd && f.bytes == Some(TOKEN.len() as i64))
    });
    assert_eq!(file(&read).unwrap().ino, ino);
    h.wait_for("the read at end of file", |e| {
        e.kind == EventKind::TokenRead
            && e.process.tgid == me()
            && file(e).is_some_and(|f| f.fd == fd && f.bytes == Some(0))
    });
    h.wait_for("the close", |e| {
        e.kind == EventKind::TokenClose
            && e.process.tgid == me()
            && file(e).is_some_and(|f| f.fd == fd)
    });

    // 2. The real file directly, and through `..data`.
    read_whole(&volume.real_file);
    h.wait_for(
        "open of the timestamped file",
        is_token_open(volume.real_file.display().to_string()),
    );
    let via_data = volume.dir.join("..data/token");
    read_whole(&via_data);
    h.wait_for(
        "open through ..data",
        is_token_open(via_data.display().to_string()),
    );

    // 3. openat with a directory fd and a relative name.
    let dir = std::fs::File::open(&volume.dir).expect("open volume dir");
    let name = c"token";
    // SAFETY: valid dirfd and NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    assert!(fd >= 0, "openat failed");
    let mut buf = [0u8; 16];
    // SAFETY: fd is open; pread64 into a 16-byte buffer at offset 4.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 4) };
    assert_eq!(n, 16);
    // SAFETY: fd is ours to close.
    unsafe { libc::close(fd) };
    let open = h.wait_for("openat with a dir fd", is_token_open("token".to_owned()));
    assert_eq!(
        file(&open).unwrap().matched,
        vec!["inode"],
        "a bare name matches by inode only"
    );
    h.wait_for("the pread64 of 16 bytes", |e| {
        e.kind == EventKind::TokenRead
            && e.process.tgid == me()
            && file(e).is_some_and(|f| {
                f.fd == fd
                    && f.bytes == Some(16)
                    && f.syscall == Some(tokenwatch_host::sensor::event::Syscall::Pread64)
            })
    });

    // 4. openat2, then readv into two buffers.
    let c = cpath(&path);
    // struct open_how { u64 flags; u64 mode; u64 resolve; } (libc's is non-exhaustive)
    let how: [u64; 3] = [(libc::O_RDONLY | libc::O_CLOEXEC) as u64, 0, 0];
    // SAFETY: valid path, a valid open_how and its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &raw const how,
            size_of::<libc::open_how>(),
        )
    } as i32;
    assert!(
        fd >= 0,
        "openat2 failed: {}",
        std::io::Error::last_os_error()
    );
    let mut a = [0u8; 10];
    let mut b = [0u8; 5];
    let iov = [
        libc::iovec {
            iov_base: a.as_mut_ptr().cast(),
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        },
    ];
    // SAFETY: fd is open; two valid iovecs.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
    assert_eq!(n, 15);
    // SAFETY: fd is ours to close.
    unsafe { libc::close(fd) };
    let open = h.wait_for("openat2", is_token_open(path.display().to_string()));
    assert_eq!(
        file(&open).unwrap().syscall,
        Some(tokenwatch_host::sensor::event::Syscall::Openat2)
    );
    h.wait_for("the readv of 15 bytes", |e| {
        e.kind == EventKind::TokenRead
            && e.process.tgid == me()
            && file(e).is_some_and(|f| f.fd == fd && f.bytes == Some(15))
    });

    // 5. Through /proc/self/root.
    let via_proc = std::path::Path::new("/proc/self/root").join(path.strip_prefix("/").unwrap());
    read_whole(&via_proc);
    h.wait_for(
        "open through /proc/self/root",
        is_token_open(via_proc.display().to_string()),
    );

    // 6. A hard link with an unrelated name: caught by inode alone.
    let link = volume.root.path().join("innocent-looking.txt");
    std::fs::hard_link(&volume.real_file, &link).expect("hard link");
    read_whole(&link);
    let open = h.wait_for(
        "open through a hard link",
        is_token_open(link.display().to_string()),
    );
    assert_eq!(file(&open).unwrap().matched, vec!["inode"]);
    assert_eq!(h.kernel_drops(), 0);
}

#[test]
fn suffix_alone_catches_an_unwatched_token_and_a_relative_open_after_chdir_by_inode() {
    let volume = TokenVolume::new(TOKEN);
    // Not watched by inode: only the suffix rule can catch it.
    if !kernel_has("suffix_alone", KernelFeature::SyscallPathMatch) {
        return;
    }
    let Some(mut h) = Harness::start("suffix_alone", syscall_mode()) else {
        return;
    };
    let path = volume.token_path();
    read_whole(&path);
    let open = h.wait_for("open matched by suffix", |e| {
        e.kind == EventKind::TokenOpen
            && e.process.tgid == me()
            && file(e).and_then(|f| f.path.clone()) == Some(path.display().to_string())
    });
    assert_eq!(file(&open).unwrap().matched, vec!["suffix"]);

    // A relative path after chdir (in a child, so the harness keeps its cwd),
    // once the inode is watched.
    let (dev, ino) = volume.file_id();
    h.sensor()
        .control()
        .watch_inode(dev, ino)
        .expect("watch inode");
    let status = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && exec cat token >/dev/null")
        .arg("sh")
        .arg(&volume.dir)
        .status()
        .expect("run sh");
    assert!(status.success());
    let open = h.wait_for("cat's relative open after chdir", |e| {
        e.kind == EventKind::TokenOpen
            && e.process.comm == "cat"
            && file(e).is_some_and(|f| f.ino == ino && f.path.as_deref() == Some("token"))
    });
    let cat = open.process.tgid;
    // The child is gone by now, but it is still named, with its parent.
    let read = h.wait_for("cat's read", |e| {
        e.kind == EventKind::TokenRead
            && e.process.tgid == cat
            && file(e).is_some_and(|f| f.bytes == Some(TOKEN.len() as i64))
    });
    assert!(
        read.process
            .exe
            .as_deref()
            .is_some_and(|exe| exe.ends_with("/cat")),
        "{:?}",
        read.process
    );
    // `sh` exec'd `cat`, so cat's parent is this test process.
    let own_exe = std::fs::read_link("/proc/self/exe")
        .unwrap()
        .display()
        .to_string();
    assert_eq!(read.process.parent_exe.as_deref(), Some(own_exe.as_str()));
    assert_ne!(read.process.ppid, 0);
}

#[test]
fn a_short_lived_child_is_named_after_it_exits() {
    let volume = TokenVolume::new(TOKEN);
    if !kernel_has("short_lived_child", KernelFeature::SyscallPathMatch) {
        return;
    }
    let Some(mut h) = Harness::start("short_lived_child", config_watching(&volume)) else {
        return;
    };
    let status = Command::new("cat")
        .arg(volume.token_path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cat");
    assert!(status.success());
    let read = h.wait_for("cat's read", |e| {
        e.kind == EventKind::TokenRead
            && e.process.comm == "cat"
            && file(e).is_some_and(|f| f.bytes == Some(TOKEN.len() as i64))
    });
    let exit = h.wait_for("cat's exit", |e| {
        e.kind == EventKind::Exit && e.process.tgid == read.process.tgid
    });
    assert_eq!(exit.process.ppid, me());
    assert!(
        read.process
            .exe
            .as_deref()
            .is_some_and(|exe| exe.ends_with("/cat"))
    );
    assert_eq!(read.process.ppid, me());
    let own_exe = std::fs::read_link("/proc/self/exe")
        .unwrap()
        .display()
        .to_string();
    assert_eq!(read.process.parent_exe.as_deref(), Some(own_exe.as_str()));
}

#[test]
fn unrelated_opens_and_reads_produce_no_events() {
    let volume = TokenVolume::new(TOKEN);
    if !kernel_has("unrelated_opens", KernelFeature::SyscallPathMatch) {
        return;
    }
    let Some(mut h) = Harness::start("unrelated_opens", config_watching(&volume)) else {
        return;
    };
    let other_dir = tempfile::tempdir().unwrap();
    // Named like a token, but not at a token path, and not the watched inode.
    let decoy = other_dir.path().join("token");
    std::fs::write(&decoy, b"not a token").unwrap();
    let notes = other_dir.path().join("serviceaccount-token.txt");
    std::fs::write(&notes, b"notes").unwrap();
    for _ in 0..50 {
        read_whole(&decoy);
        read_whole(&notes);
        read_whole(std::path::Path::new("/etc/hostname"));
    }
    // Then a marker: once it is seen, everything before it has been delivered.
    read_whole(&volume.token_path());
    let (_, token_ino) = volume.file_id();
    // This thread's: the other tests of this binary run in parallel threads
    // of the same process and open their own tokens (seen in the 6.12 VM).
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    h.wait_for("the marker token open", |e| {
        e.kind == EventKind::TokenOpen
            && e.process.pid == tid
            && file(e).is_some_and(|f| f.ino == token_ino)
    });
    let (decoy_dev, decoy_ino) = tokenwatch_host::sensor::file_id(&decoy).unwrap();
    let (_, notes_ino) = tokenwatch_host::sensor::file_id(&notes).unwrap();
    for event in &h.seen {
        if let Some(f) = file(event) {
            // Nobody's open of the decoys is an event.
            assert!(
                !(f.dev == decoy_dev && (f.ino == decoy_ino || f.ino == notes_ino)),
                "an unrelated file produced an event: {event:?}"
            );
            // Of this thread's opens, only the token's.
            if event.process.pid == tid {
                assert_eq!(
                    f.ino, token_ino,
                    "an unrelated file produced an event: {event:?}"
                );
            }
        }
    }
}

fn connect_and_expect(h: &mut Harness, listener_addr: SocketAddr) {
    connect_to_and_expect(h, listener_addr, listener_addr);
}

/// Connects to `dial` and expects events for the endpoint it reaches, `listener_addr`.
fn connect_to_and_expect(h: &mut Harness, dial: SocketAddr, listener_addr: SocketAddr) {
    let stream = TcpStream::connect(dial).expect("connect");
    let local = stream.local_addr().unwrap();
    let attempt = h.wait_for("the connect attempt", |e| {
        e.kind == EventKind::Connect
            && e.process.tgid == me()
            && connect(e).is_some_and(|c| c.dport == listener_addr.port())
    });
    let c = connect(&attempt).unwrap();
    assert_eq!(c.daddr, dial.ip());
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    assert_eq!(i64::from(attempt.process.pid), tid, "the connecting thread");
    let result = h.wait_for("the connect result", |e| {
        e.kind == EventKind::ConnectResult && connect(e).is_some_and(|r| r.sock_id == c.sock_id)
    });
    let r = connect(&result).unwrap();
    assert_eq!(r.established, Some(true));
    assert_eq!(r.sport, local.port());
    assert_eq!(r.saddr, local.ip());
    assert_eq!(r.daddr, dial.ip());
    assert_eq!(result.process.tgid, me());
    assert_eq!(result.process.comm, attempt.process.comm);
    assert_eq!(r.family, if dial.is_ipv4() { "ipv4" } else { "ipv6" });
}

#[test]
fn connects_to_registered_endpoints_are_reported_for_ipv4_and_ipv6() {
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let unregistered = TcpListener::bind("127.0.0.1:0").unwrap();
    let v4_addr = v4.local_addr().unwrap();
    let v6_addr = v6.local_addr().unwrap();
    let config = SensorConfig {
        endpoints: vec![v4_addr, v6_addr],
        ..SensorConfig::default()
    };
    let Some(mut h) = Harness::start("connects", config) else {
        return;
    };

    // Unregistered first; the registered connects after it act as markers.
    let other = TcpStream::connect(unregistered.local_addr().unwrap()).unwrap();
    connect_and_expect(&mut h, v4_addr);
    connect_and_expect(&mut h, v6_addr);
    let other_port = other.peer_addr().unwrap().port();
    assert!(
        !h.seen
            .iter()
            .any(|e| connect(e).is_some_and(|c| c.dport == other_port)),
        "a connect to an unregistered port was reported:\n{}",
        h.describe()
    );
    drop((v4, v6, unregistered));
}

#[test]
fn an_ipv4_mapped_ipv6_connect_matches_the_ipv4_endpoint() {
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v4_addr = v4.local_addr().unwrap();
    let config = SensorConfig {
        endpoints: vec![v4_addr],
        ..SensorConfig::default()
    };
    let Some(mut h) = Harness::start("v4_mapped_connect", config) else {
        return;
    };
    // An IPv6 socket reaching 127.0.0.1 through ::ffff:127.0.0.1.
    let mapped = SocketAddr::new(
        std::net::IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        v4_addr.port(),
    );
    connect_to_and_expect(&mut h, mapped, v4_addr);
    // An endpoint registered in its mapped form matches plain IPv4 connects too.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    h.sensor()
        .control()
        .add_endpoint(SocketAddr::new(
            std::net::IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
            other_addr.port(),
        ))
        .expect("add mapped endpoint");
    connect_and_expect(&mut h, other_addr);
    drop((v4, other));
}

#[test]
fn endpoints_added_and_removed_while_running_keep_a_shared_port_watched() {
    // Two endpoints on one port number (IPv4 and IPv6 loopback), and a
    // third on its own port as the marker that ends each "nothing" check.
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v4_addr = v4.local_addr().unwrap();
    let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, v4_addr.port())) else {
        panic!("[::1]:{} is taken; rerun", v4_addr.port());
    };
    let v6_addr = v6.local_addr().unwrap();
    let marker = TcpListener::bind("127.0.0.1:0").unwrap();
    let marker_addr = marker.local_addr().unwrap();
    let config = SensorConfig {
        endpoints: vec![v4_addr, v6_addr, marker_addr],
        ..SensorConfig::default()
    };
    let Some(mut h) = Harness::start("endpoint_updates", config) else {
        return;
    };
    let control = h.sensor().control();
    let unreported = |h: &mut Harness, addr: SocketAddr, what: &str| {
        let stream = TcpStream::connect(addr).unwrap();
        let sport = stream.local_addr().unwrap().port();
        connect_and_expect(h, marker_addr);
        assert!(
            !h.seen
                .iter()
                .any(|e| connect(e).is_some_and(|c| c.sport == sport)),
            "{what} was reported:\n{}",
            h.describe()
        );
    };
    // The IPv4 endpoint goes; the IPv6 one on the same port stays watched.
    control.remove_endpoint(v4_addr).expect("remove v4");
    unreported(&mut h, v4_addr, "a connect to a removed endpoint");
    connect_and_expect(&mut h, v6_addr);
    // Then the other: that port is no endpoint's any more.
    control.remove_endpoint(v6_addr).expect("remove v6");
    unreported(&mut h, v6_addr, "a connect to a removed endpoint");
    // Removing what is not there is no error; adding back watches again.
    control.remove_endpoint(v6_addr).expect("remove twice");
    control.add_endpoint(v4_addr).expect("add v4 back");
    connect_and_expect(&mut h, v4_addr);
    unreported(
        &mut h,
        v6_addr,
        "a connect to the removed endpoint on a watched port",
    );
    drop((v4, v6, marker));
}

#[test]
fn a_refused_connect_is_attempted_and_not_established() {
    // Bind then close a listener: its port now refuses connections.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let config = SensorConfig {
        endpoints: vec![addr],
        ..SensorConfig::default()
    };
    let Some(mut h) = Harness::start("refused_connect", config) else {
        return;
    };
    let err = TcpStream::connect(addr).expect_err("the port is closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let attempt = h.wait_for("the refused attempt", |e| {
        e.kind == EventKind::Connect
            && e.process.tgid == me()
            && connect(e).is_some_and(|c| c.dport == addr.port())
    });
    let sock = connect(&attempt).unwrap().sock_id;
    let result = h.wait_for("its result", |e| {
        e.kind == EventKind::ConnectResult && connect(e).is_some_and(|c| c.sock_id == sock)
    });
    assert_eq!(connect(&result).unwrap().established, Some(false));
    assert_eq!(result.process.tgid, me());
}

#[test]
fn the_watched_inode_map_can_change_while_running() {
    let volume = TokenVolume::new(TOKEN);
    // A name no suffix rule matches, so only the inode map decides.
    let plain = volume.root.path().join("plain-file");
    std::fs::write(&plain, b"0123456789").unwrap();
    if !kernel_has("map_updates", KernelFeature::SyscallPathMatch) {
        return;
    }
    let Some(mut h) = Harness::start("map_updates", syscall_mode()) else {
        return;
    };
    let control = h.sensor().control();
    let (dev, ino) = control.watch_file(&plain).expect("watch");
    read_whole(&plain);
    h.wait_for("open of the newly watched file", |e| {
        e.kind == EventKind::TokenOpen
            && e.process.tgid == me()
            && file(e).is_some_and(|f| f.ino == ino)
    });
    control.unwatch_inode(dev, ino).expect("unwatch");
    control
        .unwatch_inode(dev, ino)
        .expect("unwatching what is not watched is no error");
    read_whole(&plain);
    // Marker: the token through its suffix.
    read_whole(&volume.token_path());
    h.wait_for("the marker", |e| {
        e.kind == EventKind::TokenOpen
            && file(e).is_some_and(|f| f.path.as_deref().is_some_and(|p| p.ends_with("/token")))
    });
    let opens_of_plain = h
        .seen
        .iter()
        .filter(|e| e.kind == EventKind::TokenOpen && file(e).is_some_and(|f| f.ino == ino))
        .count();
    assert_eq!(
        opens_of_plain,
        1,
        "the unwatched file was still reported:\n{}",
        h.describe()
    );
}
