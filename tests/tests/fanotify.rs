//! The default file side of the sensor on the real kernel: a fanotify
//! filesystem mark on a token volume that is a tmpfs of its own (as the
//! kubelet mounts it) reports every route to the token, whatever syscall
//! made the access, and nothing for the volume's other files or unrelated
//! files; a reader that exited before its event was read is named from the
//! eBPF lineage; a read right after an atomic rotation is seen.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use tokenwatch_host::sensor::{
    SensorConfig, SensorEvent,
    event::EventKind,
    fanotify::{MarkKind, is_own_superblock},
};
use tokenwatch_tests::{Harness, TokenVolume, c_helper, file};

const TOKEN: &[u8] = b"eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl";

/// Opens the file named by argv[1] and reads it with io_uring (liburing).
const IO_URING_READER: &str = include_str!("../helpers/io_uring_reader.c");

/// A 64-bit program that opens and reads argv[1] through the 32-bit
/// `int $0x80` entry (compat syscall numbers: open 5, read 3, close 6).
/// Built non-PIE so that its static buffers have 32-bit addresses.
const INT80_READER: &str = include_str!("../helpers/int80_reader.c");

/// Runs a command to completion, checks it succeeded, returns its pid and stdout.
fn run(cmd: &mut Command) -> (u32, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn python(script: &str, args: &[&Path]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    cmd
}

fn ino(path: &Path) -> u64 {
    tokenwatch_host::sensor::file_id(path).expect("stat").1
}

/// Waits for a token access by `pid` on inode `ino` that saw `what`.
fn access(h: &mut Harness, route: &str, pid: u32, ino: u64, what: &str) -> SensorEvent {
    let event = h.wait_for(route, |e| {
        e.kind == EventKind::TokenAccess
            && e.process.tgid == pid
            && file(e).is_some_and(|f| f.ino == ino && f.seen.contains(&what))
    });
    let f = file(&event).unwrap();
    assert_eq!(f.matched, vec!["filesystem"], "{route}: {event:?}");
    assert!(f.path.is_some(), "{route}: no path in {event:?}");
    event
}

fn tmpfs_harness(test: &str) -> Option<(Harness, TokenVolume)> {
    // The volume first: the harness's root check decides whether to skip.
    if !tokenwatch_tests::require_root(test) {
        return None;
    }
    let volume = TokenVolume::on_tmpfs(TOKEN);
    let h = Harness::start(test, SensorConfig::default())?;
    let kind = h
        .sensor()
        .control()
        .watch_volume_file(&volume.dir, &volume.real_file)
        .expect("mark the volume");
    assert_eq!(
        kind,
        MarkKind::Filesystem,
        "a tmpfs volume is its own superblock"
    );
    Some((h, volume))
}

#[test]
fn every_route_and_every_way_of_reading_a_token_on_a_tmpfs_volume_is_seen() {
    let Some((mut h, volume)) = tmpfs_harness("every_route_fanotify") else {
        return;
    };
    let token = volume.token_path();
    let token_ino = ino(&volume.real_file);
    let dir = volume.dir.clone();
    let out_dir = tempfile::tempdir().unwrap();

    // Routes (each read with read(2) by cat unless said otherwise).
    let (pid, _) = run(Command::new("cat").arg(&token));
    let e = access(&mut h, "absolute path", pid, token_ino, "access");
    assert!(
        e.process
            .exe
            .as_deref()
            .is_some_and(|x| x.ends_with("/cat")),
        "{e:?}"
    );
    assert!(
        file(&e)
            .unwrap()
            .path
            .as_deref()
            .is_some_and(|p| p.ends_with("/token")),
        "{e:?}"
    );

    let (pid, _) = run(Command::new("sh")
        .args(["-c", "cd \"$1\" && exec cat token", "sh"])
        .arg(&dir));
    access(
        &mut h,
        "relative path after chdir",
        pid,
        token_ino,
        "access",
    );

    let (pid, _) = run(&mut python(
        "import os,sys\nd=os.open(sys.argv[1],os.O_RDONLY)\nfd=os.open('token',os.O_RDONLY,dir_fd=d)\nassert os.read(fd,4096)",
        &[&dir],
    ));
    access(
        &mut h,
        "openat with a directory fd",
        pid,
        token_ino,
        "access",
    );

    let (pid, _) = run(&mut python(
        "import ctypes,os,sys\nlibc=ctypes.CDLL(None,use_errno=True)\nhow=(ctypes.c_uint64*3)(os.O_RDONLY|os.O_CLOEXEC,0,0)\nfd=libc.syscall(437,ctypes.c_long(-100),sys.argv[1].encode(),ctypes.byref(how),ctypes.c_size_t(24))\nassert fd>=0, ctypes.get_errno()\nassert os.read(fd,4096)",
        &[&token],
    ));
    access(&mut h, "openat2", pid, token_ino, "access");

    let (pid, _) = run(Command::new("cat").arg(dir.join("..data/token")));
    access(&mut h, "through ..data", pid, token_ino, "access");
    let (pid, _) = run(Command::new("cat").arg(&volume.real_file));
    access(&mut h, "the timestamped file", pid, token_ino, "access");

    let via_root = Path::new("/proc/self/root").join(token.strip_prefix("/").unwrap());
    let (pid, _) = run(Command::new("cat").arg(&via_root));
    access(&mut h, "/proc/self/root/...", pid, token_ino, "access");

    let link = dir.join("innocent.txt");
    std::fs::hard_link(&volume.real_file, &link).expect("hard link");
    let (pid, _) = run(Command::new("cat").arg(&link));
    access(
        &mut h,
        "a hard link under another name",
        pid,
        token_ino,
        "access",
    );

    // A bind mount of the volume in a mount namespace of its own, as a
    // container runtime makes it.
    let target = out_dir.path().join("bind");
    std::fs::create_dir(&target).unwrap();
    let (pid, _) = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" \"$2\" && exec cat \"$2/token\"")
        .arg("sh")
        .arg(&dir)
        .arg(&target));
    access(
        &mut h,
        "a bind mount in another mount namespace",
        pid,
        token_ino,
        "access",
    );

    // /proc/PID/fd/N of another process holding the token open.
    let mut holder = Command::new("sleep")
        .arg("30")
        .stdin(std::fs::File::open(&token).unwrap())
        .spawn()
        .unwrap();
    let (pid, _) = run(Command::new("cat").arg(format!("/proc/{}/fd/0", holder.id())));
    access(
        &mut h,
        "/proc/PID/fd/N of another process",
        pid,
        token_ino,
        "access",
    );
    let _ = holder.kill();
    let _ = holder.wait();

    // Ways of reading.
    let (pid, _) = run(&mut python(
        "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nassert len(os.pread(fd,16,4))==16",
        &[&token],
    ));
    access(&mut h, "pread64", pid, token_ino, "access");
    let (pid, _) = run(&mut python(
        "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nassert os.readv(fd,[bytearray(10),bytearray(5)])==15",
        &[&token],
    ));
    access(&mut h, "readv", pid, token_ino, "access");
    let sink = out_dir.path().join("sendfile-out");
    let (pid, _) = run(&mut python(
        "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nout=os.open(sys.argv[2],os.O_WRONLY|os.O_CREAT,0o600)\nassert os.sendfile(out,fd,0,4096)>0",
        &[&token, &sink],
    ));
    access(&mut h, "sendfile", pid, token_ino, "access");
    // Before 6.5 a splice read raises no access event (docs/requirements.md).
    if tokenwatch_tests::kernel_has(
        "every_route (splice)",
        tokenwatch_tests::KernelFeature::SpliceAccessEvent,
    ) {
        let (pid, _) = run(&mut python(
            "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nr,w=os.pipe()\nassert os.splice(fd,w,4096)>0",
            &[&token],
        ));
        access(&mut h, "splice", pid, token_ino, "access");
    }
    let copy = out_dir.path().join("copied");
    let (pid, _) = run(Command::new("cp").arg(&token).arg(&copy));
    access(&mut h, "cp (copy_file_range)", pid, token_ino, "access");
    assert_eq!(std::fs::read(&copy).unwrap(), TOKEN);
    let (pid, _) = run(&mut python(
        "import mmap,os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nm=mmap.mmap(fd,0,prot=mmap.PROT_READ)\nassert m[:3]==b'eyJ'",
        &[&token],
    ));
    access(&mut h, "mmap (its open)", pid, token_ino, "open");
    let (pid, _) = run(&mut python(
        "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nos.dup2(fd,77)\nos.close(fd)\nassert os.read(77,4096)",
        &[&token],
    ));
    access(&mut h, "a dup2'd fd", pid, token_ino, "access");
    let (_, child) = run(&mut python(
        "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\npid=os.fork()\nif pid==0:\n    os.read(fd,4096)\n    os._exit(0)\nos.waitpid(pid,0)\nprint(pid)",
        &[&token],
    ));
    let child: u32 = child.trim().parse().expect("child pid");
    access(
        &mut h,
        "an fd inherited across fork",
        child,
        token_ino,
        "access",
    );

    let uring = c_helper("io_uring_reader", IO_URING_READER, &["-luring"]);
    let (pid, out) = run(Command::new(&uring).arg(&token));
    assert_eq!(out.trim(), TOKEN.len().to_string());
    access(&mut h, "io_uring open + read", pid, token_ino, "access");

    let int80 = c_helper("int80_reader", INT80_READER, &["-no-pie", "-fno-pie"]);
    let (pid, out) = run(Command::new(&int80).arg(&token));
    assert_eq!(out.trim(), TOKEN.len().to_string());
    let e = access(&mut h, "int $0x80 open + read", pid, token_ino, "access");
    // Named while alive (pidfd) or, when it exited first, from its exec record.
    assert!(
        ["pidfd", "lineage"].contains(&e.process.named_by)
            && e.process
                .exe
                .as_deref()
                .is_some_and(|x| x.ends_with("/int80_reader")),
        "{e:?}"
    );

    let losses = h.sensor().losses();
    assert_eq!(losses, Default::default(), "nothing may be lost here");
}

#[test]
fn the_volumes_other_files_and_unrelated_files_produce_nothing() {
    let Some((mut h, volume)) = tmpfs_harness("unrelated_fanotify") else {
        return;
    };
    let other_dir = tempfile::tempdir().unwrap();
    let decoy = other_dir.path().join("token");
    std::fs::write(&decoy, b"not a token").unwrap();
    let mut quiet = Vec::new();
    for _ in 0..5 {
        for path in [
            volume.dir.join("ca.crt"),
            volume.dir.join("namespace"),
            decoy.clone(),
            PathBuf::from("/etc/hostname"),
        ] {
            quiet.push(run(Command::new("cat").arg(&path)).0);
        }
    }
    // Then a marker: fanotify keeps the order of one group's events.
    let (marker, _) = run(Command::new("cat").arg(volume.token_path()));
    access(
        &mut h,
        "the marker",
        marker,
        ino(&volume.real_file),
        "access",
    );
    let others = [
        ino(&volume.dir.join("ca.crt")),
        ino(&volume.dir.join("namespace")),
    ];
    for event in &h.seen {
        if let Some(f) = file(event) {
            assert!(
                !others.contains(&f.ino) && !quiet.contains(&event.process.tgid),
                "an unrelated read produced an event: {event:?}"
            );
        }
    }
}

#[test]
fn a_reader_that_exited_before_its_event_was_read_is_named_from_the_lineage() {
    let Some((mut h, volume)) = tmpfs_harness("exited_reader") else {
        return;
    };
    let control = h.sensor().control();
    control.hold_file_events(true);
    let (pid, _) = run(Command::new("cat").arg(volume.token_path()));
    // cat has exited and been reaped; its events are still in the kernel's queue.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    control.hold_file_events(false);
    let e = access(
        &mut h,
        "the exited reader",
        pid,
        ino(&volume.real_file),
        "access",
    );
    // Named from the lineage when the kernel's event outlived the process;
    // from the pidfd when the reader thread had already taken the event off
    // the kernel's queue while cat lived (the hold is in our queue). Either
    // way the exited reader is named, and never as a guess.
    assert!(matches!(e.process.named_by, "lineage" | "pidfd"), "{e:?}");
    assert!(!e.process.uncertain, "one process had this pid: {e:?}");
    assert_eq!(e.process.comm, "cat");
    assert!(
        e.process
            .exe
            .as_deref()
            .is_some_and(|x| x.ends_with("/cat")),
        "{e:?}"
    );
    assert_eq!(e.process.ppid, std::process::id(), "{e:?}");
    assert_ne!(e.process.cgroup_id, 0, "{e:?}");
    assert_ne!(e.process.mnt_ns, 0, "{e:?}");
}

#[test]
fn a_read_right_after_an_atomic_rotation_is_seen_without_re_marking() {
    let Some((mut h, mut volume)) = tmpfs_harness("rotation") else {
        return;
    };
    let old = ino(&volume.real_file);
    volume.rotate(b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyb3RhdGVkIn0.c2ln");
    let new = ino(&volume.real_file);
    assert_ne!(old, new);
    let (pid, _) = run(Command::new("cat").arg(volume.token_path()));
    let e = access(&mut h, "the read of the rotated token", pid, new, "access");
    assert!(
        file(&e)
            .unwrap()
            .path
            .as_deref()
            .is_some_and(|p| p.contains("..2026_01_01_00_00_02")),
        "{e:?}"
    );
}

#[test]
fn a_volume_that_is_not_its_own_file_system_gets_an_inode_mark() {
    if !tokenwatch_tests::require_root("inode_mark") {
        return;
    }
    let volume = TokenVolume::new(TOKEN);
    assert!(!is_own_superblock(&volume.dir).unwrap());
    let Some(mut h) = Harness::start("inode_mark", SensorConfig::default()) else {
        return;
    };
    let kind = h
        .sensor()
        .control()
        .watch_volume_file(&volume.dir, &volume.real_file)
        .expect("mark");
    assert_eq!(kind, MarkKind::Inode);
    let (pid, _) = run(Command::new("cat").arg(volume.token_path()));
    let e = h.wait_for("the read through an inode mark", |e| {
        e.kind == EventKind::TokenAccess && e.process.tgid == pid
    });
    assert_eq!(file(&e).unwrap().matched, vec!["inode"]);
    // The directory's other files are not marked.
    std::fs::write(volume.dir.join("other"), b"x").unwrap();
    let (quiet, _) = run(Command::new("cat").arg(volume.dir.join("other")));
    let (marker, _) = run(Command::new("cat").arg(&volume.real_file));
    h.wait_for("the marker", |e| {
        e.kind == EventKind::TokenAccess && e.process.tgid == marker
    });
    assert!(
        !h.seen
            .iter()
            .any(|e| e.process.tgid == quiet && file(e).is_some())
    );
}
