//! Reading a running server's io_uring setup back from the kernel, so the
//! flags the README and the code claim cannot drift from what the kernel
//! was asked for (issue 23: the claim once did, for two rounds). Both
//! backends' `tests/ring_setup.rs` use these.
//!
//! The kernel offers no query for a ring's setup flags (`/proc/PID/fdinfo`
//! of a ring lists its queues, not its flags), so:
//! - [`foreign_register`] takes a ring's descriptor out of the server
//!   (`pidfd_getfd`) and registers on it from the caller's thread: a
//!   `SINGLE_ISSUER` ring refuses any task but its creator with `EEXIST`; a
//!   plain ring accepts. No tool needed.
//! - [`traced_setups`] runs the server under `strace` and reads the flags
//!   each `io_uring_setup` passed and what the kernel answered. Needs
//!   `strace` ([`strace_available`]).
#![allow(unsafe_code)] // raw system calls the libc crate has no wrappers for

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `IORING_SETUP_IOPOLL` from `<linux/io_uring.h>`.
pub const IOPOLL: u32 = 1;
/// `IORING_SETUP_COOP_TASKRUN`.
pub const COOP_TASKRUN: u32 = 1 << 8;
/// `IORING_SETUP_SINGLE_ISSUER`.
pub const SINGLE_ISSUER: u32 = 1 << 12;
/// `IORING_SETUP_TASKRUN_FLAG`.
pub const TASKRUN_FLAG: u32 = 1 << 9;
/// `IORING_SETUP_DEFER_TASKRUN`.
pub const DEFER_TASKRUN: u32 = 1 << 13;

/// `IORING_REGISTER_PROBE`: read-only, so asking it of the server's ring
/// changes nothing there.
const IORING_REGISTER_PROBE: libc::c_long = 8;

/// The io_uring descriptors of process `pid`.
pub fn ring_fds(pid: u32) -> Vec<i32> {
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

/// Submission queue entries the kernel has taken from every ring of process
/// `pid` so far (the sum of each ring's `SqHead` in `/proc/PID/fdinfo`;
/// each counter wraps at 2^32, far beyond what a test submits).
pub fn sqes_submitted(pid: u32) -> u64 {
    ring_fds(pid)
        .into_iter()
        .map(|fd| {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .expect("/proc/PID/fdinfo");
            info.lines()
                .find_map(|l| l.strip_prefix("SqHead:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no SqHead in the fdinfo of ring fd {fd}: {info}"))
        })
        .sum()
}

/// A raw system call's result, or its errno.
fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

/// Registers (a read-only probe) on ring `fd` of process `pid` from this
/// task: `Err(EEXIST)` if the ring was set up `SINGLE_ISSUER`.
pub fn foreign_register(pid: u32, fd: i32) -> Result<(), i32> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let pidfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) })
        .expect("pidfd_open (Linux 5.6)") as libc::c_int;
    // SAFETY: pidfd_getfd takes descriptors and flags, no pointers.
    let ring = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) })
        .expect("pidfd_getfd (Linux 5.6, ptrace access to the server)")
        as libc::c_int;
    // `struct io_uring_probe` (16 bytes) and room for 256 ops of 8.
    let mut probe = vec![0u64; 2 + 256];
    // SAFETY: the buffer holds the probe header and the 256 ops the call is
    // told it may write.
    let res = check(unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring,
            IORING_REGISTER_PROBE,
            probe.as_mut_ptr(),
            256,
        )
    });
    // SAFETY: both are this process's own descriptors, closed once.
    unsafe {
        libc::close(ring);
        libc::close(pidfd);
    }
    res.map(drop)
}

/// Whether ring `fd` of process `pid` refuses a register from this task,
/// as a `SINGLE_ISSUER` ring does (`EEXIST`); panics on any other error.
pub fn refuses_second_issuer(pid: u32, fd: i32) -> bool {
    match foreign_register(pid, fd) {
        Ok(()) => false,
        Err(libc::EEXIST) => true,
        Err(errno) => panic!("io_uring_register on ring fd {fd} of pid {pid}: errno {errno}"),
    }
}

/// Whether `strace` runs here; without it, fails under `CI=true` (a test
/// that needs a tool must not pass without it there) and says SKIPPED
/// otherwise.
pub fn strace_available() -> bool {
    match Command::new("strace").arg("-V").output() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "strace is needed (apt-get install strace): {e}"
            );
            eprintln!("SKIPPED: strace is not installed: {e}");
            false
        }
    }
}

/// Kills the traced server and `strace` however the caller ends.
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
            // `flags=0x1100`, or `flags=0` when none.
            let flags = line
                .split_once("flags=")
                .and_then(|(_, rest)| rest.split([',', '}']).next())
                .and_then(|n| match n.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => n.parse().ok(),
                })
                .unwrap_or_else(|| panic!("no flags in {line}"));
            let result = result.split_whitespace().next().unwrap_or_default();
            found.push((flags, result.parse().unwrap_or(-1)));
        }
    }
    found
}

/// Runs `binary` with `args` under `strace` until it has made at least
/// `want` `io_uring_setup` calls (30 s at most), kills it, and returns every
/// call's flags and result in the order each thread made them.
pub fn traced_setups(binary: &Path, args: &[&std::ffi::OsStr], want: usize) -> Vec<(u32, i64)> {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
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
        .arg(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace");
    let traced = Traced { strace };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Once `want` are seen, a moment more for calls still in flight.
    let found = loop {
        let found = setups(&traces);
        if found.len() >= want {
            std::thread::sleep(Duration::from_millis(200));
            break setups(&traces);
        }
        assert!(
            Instant::now() < deadline,
            "{want} io_uring_setup calls expected, saw {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(traced);
    found
}

/// The system calls named in `calls` (strace's `-e trace=` list, e.g.
/// `"accept,accept4,fcntl"`) that the running process `pid` made while
/// `during` ran, each as strace wrote it without the thread id
/// (`accept4(5, {sa_family=AF_INET, ...}, [128 => 16], SOCK_CLOEXEC) = 7`): `strace -f -p` attaches to
/// every thread, `during` runs once all are traced, and an interrupt then
/// detaches it and leaves the process running. Calls in flight at either
/// end may be counted or not. Needs `strace` ([`strace_available`]).
pub fn traced_calls(pid: u32, calls: &str, during: impl FnOnce()) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e"])
        .arg(format!("trace={calls}"))
        .arg("-o")
        .arg(&out)
        .arg("-p")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace");
    let tracer = strace.id().to_string();
    let traced = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map_while(Result::ok)
            .all(|task| {
                std::fs::read_to_string(task.path().join("status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.strip_prefix("TracerPid:").map(str::trim) == Some(&tracer))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !traced() {
        assert!(Instant::now() < deadline, "strace did not attach to {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
    during();
    // SIGINT: strace detaches from every thread and exits; the traced
    // process goes on as before (SIGKILL would leave it stopped).
    // SAFETY: kill takes a pid and a signal number, no pointers.
    let strace_pid = libc::pid_t::try_from(strace.id()).expect("pid");
    unsafe { libc::kill(strace_pid, libc::SIGINT) };
    strace.wait().expect("strace exits");
    std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        // `1234  accept4(5, ...) = 7`; a `<... accept4 resumed>` line is the
        // second half of a call another thread's line interrupted, whose
        // first half (`accept4(5, <unfinished ...>`) is kept.
        .filter_map(|line| line.split_once(char::is_whitespace))
        .map(|(_, call)| call.trim_start())
        .filter(|call| !call.starts_with("<..."))
        .map(str::to_owned)
        .collect()
}

/// The id of the thread of process `pid` named `name` (`/proc/PID/task/TID/comm`).
pub fn thread_named(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .map_while(Result::ok)
        .find_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            (comm.trim_end() == name)
                .then(|| task.file_name().to_str()?.parse().ok())
                .flatten()
        })
}

/// What thread `tid` of process `pid` has done so far: CPU time (user and
/// system, from `/proc/PID/task/TID/stat`) and read-type system calls made
/// (`syscr` in `.../io`; an eventfd or socket `read` counts, `epoll_wait`
/// and `io_uring_enter` do not).
pub fn thread_usage(pid: u32, tid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).expect("stat");
    // Fields after the `(comm)`, which may hold spaces: state is field 3,
    // utime 14 and stime 15.
    let after = &stat[stat.rfind(')').expect("(comm)") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf takes a constant and no pointers.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("CLK_TCK");
    let cpu = Duration::from_millis(ticks * 1000 / hz);
    let io = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/io")).expect("io");
    let reads = io
        .lines()
        .find_map(|l| l.strip_prefix("syscr:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("syscr");
    (cpu, reads)
}
