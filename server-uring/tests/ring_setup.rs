//! The io_uring setup the README and the code claim (`COOP_TASKRUN` and
//! `SINGLE_ISSUER` on every core's ring), read back from the running server
//! rather than from the code, so the claim cannot drift from what the kernel
//! was asked for (issue 23: it once did, for two rounds).
//!
//! The kernel offers no query for a ring's setup flags (`/proc/PID/fdinfo`
//! of a ring lists its queues, not its flags), so:
//! - `every_ring_refuses_a_second_issuer` takes each ring's descriptor out
//!   of the server (`pidfd_getfd`) and registers on it from the test's own
//!   thread: a `SINGLE_ISSUER` ring refuses any task but its creator with
//!   `EEXIST`; a plain ring accepts. No tool needed.
//! - `rings_are_set_up_with_coop_taskrun_and_single_issuer` runs the server
//!   under `strace` and reads the flags each `io_uring_setup` passed and the
//!   kernel accepted. Needs `strace` (fails under `CI=true` without it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shorty_conformance::harness::Server;

const BINARY: &str = env!("CARGO_BIN_EXE_shorty-uring");

/// `IORING_SETUP_*` from `<linux/io_uring.h>`.
const COOP_TASKRUN: u32 = 1 << 8;
const SINGLE_ISSUER: u32 = 1 << 12;

/// `IORING_REGISTER_PROBE` from `<linux/io_uring.h>`: read-only, so asking
/// it of the server's ring changes nothing there.
const IORING_REGISTER_PROBE: libc::c_long = 8;

/// The server's io_uring descriptors.
fn ring_fds(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            (target == Path::new("anon_inode:[io_uring]"))
                .then(|| entry.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// A raw system call's result, or its errno.
fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

#[test]
#[allow(unsafe_code)] // raw system calls the libc crate has no wrappers for
fn every_ring_refuses_a_second_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Path::new(BINARY), dir.path(), &["--threads", "2"]);
    let pid = server.pid();
    let fds = ring_fds(pid);
    assert_eq!(fds.len(), 2, "one ring per core: {fds:?}");
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let pidfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) })
        .expect("pidfd_open (Linux 5.6)") as libc::c_int;
    for fd in fds {
        // SAFETY: pidfd_getfd takes descriptors and flags, no pointers.
        let ring = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) })
            .expect("pidfd_getfd (Linux 5.6, ptrace access to the server)")
            as libc::c_int;
        // `struct io_uring_probe` (16 bytes) and room for 256 ops of 8.
        let mut probe = vec![0u64; 2 + 256];
        // SAFETY: the buffer holds the probe header and the 256 ops the
        // call is told it may write.
        let res = check(unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring,
                IORING_REGISTER_PROBE,
                probe.as_mut_ptr(),
                256,
            )
        });
        assert_eq!(
            res,
            Err(libc::EEXIST),
            "ring fd {fd} of the server accepted a register from another task: \
             it was not set up with IORING_SETUP_SINGLE_ISSUER"
        );
        // SAFETY: `ring` is this process's own descriptor, closed once.
        unsafe { libc::close(ring) };
    }
    // SAFETY: as above.
    unsafe { libc::close(pidfd) };
}

/// Kills the traced server and `strace` however the test ends.
struct Traced {
    strace: Child,
}

impl Drop for Traced {
    fn drop(&mut self) {
        // The server is strace's child; kill it first, or a dying strace
        // would detach it and leave it running.
        let pid = self.strace.id();
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            for child in children.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", child]).status();
            }
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

/// Every completed `io_uring_setup` in the traces under `dir`: the flags
/// passed and the result.
fn setups(dir: &Path) -> Vec<(u32, i64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("trace.") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.starts_with("io_uring_setup(")) {
            let Some((_, result)) = line.rsplit_once(") = ") else {
                continue; // not finished yet
            };
            let flags = line
                .split_once("flags=0x")
                .and_then(|(_, rest)| rest.split(',').next())
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .unwrap_or_else(|| panic!("no flags in {line}"));
            let result = result.split_whitespace().next().unwrap_or_default();
            found.push((flags, result.parse().unwrap_or(-1)));
        }
    }
    found
}

#[test]
fn rings_are_set_up_with_coop_taskrun_and_single_issuer() {
    if let Err(e) = Command::new("strace").arg("-V").output() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is needed (apt-get install strace): {e}"
        );
        eprintln!("SKIPPED: strace is not installed: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let traces: PathBuf = dir.path().join("traces");
    std::fs::create_dir(&traces).unwrap();
    // `-ff`: a file per thread, so two cores' calls never interleave;
    // `-X raw`: flags as a number (strace 6.1 has no name for some).
    let strace = Command::new("strace")
        .args([
            "-X",
            "raw",
            "-ff",
            "-qq",
            "-e",
            "trace=io_uring_setup",
            "-o",
        ])
        .arg(traces.join("trace"))
        .arg(BINARY)
        .args(["--threads", "2", "--listen", "127.0.0.1:0"])
        .args(["--http", "127.0.0.1:0", "--admin", "off", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace");
    let traced = Traced { strace };
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = setups(&traces);
        if found.len() >= 2 {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "two io_uring_setup calls expected, saw {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(traced);
    for (flags, result) in found {
        assert!(result >= 0, "io_uring_setup failed: {result}");
        assert_eq!(
            flags & (COOP_TASKRUN | SINGLE_ISSUER),
            COOP_TASKRUN | SINGLE_ISSUER,
            "ring set up with flags {flags:#x}: COOP_TASKRUN and SINGLE_ISSUER expected"
        );
    }
}
