//! Starting and stopping a server binary under test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wire::Conn;

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server: a child process on a free port with its own data
/// directory.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    http_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `binary` on `127.0.0.1:0` with 2 threads, `data_dir`, and
    /// `args`, and waits until it listens.
    pub fn start(binary: &Path, data_dir: &Path, args: &[&str]) -> Server {
        Self::start_in(binary, Path::new("."), data_dir, args)
    }

    /// As [`start`](Self::start), with `cwd` as the working directory (so a
    /// relative `data_dir` is taken relative to it).
    pub fn start_in(binary: &Path, cwd: &Path, data_dir: &Path, args: &[&str]) -> Server {
        Self::spawn(Command::new(binary), binary, cwd, data_dir, args, &[])
    }

    /// As [`start`](Self::start), with `env` set for the server process
    /// only (tests run in parallel: never change the test's own
    /// environment).
    pub fn start_env(
        binary: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Self::spawn(
            Command::new(binary),
            binary,
            Path::new("."),
            data_dir,
            args,
            env,
        )
    }

    /// As [`start`](Self::start), under an open-file limit of `nofile`
    /// (soft and hard: the server cannot raise it), set by util-linux's
    /// `prlimit`, which then runs the server in its own process.
    pub fn start_with_nofile(binary: &Path, data_dir: &Path, args: &[&str], nofile: u64) -> Server {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(binary);
        Self::spawn(command, binary, Path::new("."), data_dir, args, &[])
    }

    fn spawn(
        mut command: Command,
        binary: &Path,
        cwd: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = command
            .current_dir(cwd)
            // Each listener on loopback unless the case places it.
            .args(
                ["--listen", "--http", "--admin"]
                    .into_iter()
                    .filter(|flag| !args.contains(flag))
                    .flat_map(|flag| [flag, "127.0.0.1:0"]),
            )
            // Two cores unless the case says otherwise.
            .args(if args.contains(&"--threads") {
                &[][..]
            } else {
                &["--threads", "2"][..]
            })
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        // Keeps draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let protocol = ["shorty", "http", "admin"]
                        .into_iter()
                        .find(|p| line.contains(&format!("protocol=\"{p}\"")));
                    if let (Some(protocol), Some(addr)) = (protocol, line.split("addr=").nth(1)) {
                        let addr = addr.split_whitespace().next().unwrap_or_default();
                        if let Ok(addr) = addr.parse::<SocketAddr>() {
                            let _ = tx.send((protocol, addr));
                        }
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        // Every listener, unless the flags turned one off.
        let wants_http = !args.windows(2).any(|w| w == ["--http", "off"]);
        let wants_admin = !args.windows(2).any(|w| w == ["--admin", "off"]);
        let (mut addr, mut http_addr, mut admin_addr) = (None, None, None);
        let deadline = Instant::now() + START_TIMEOUT;
        while addr.is_none()
            || (wants_http && http_addr.is_none())
            || (wants_admin && admin_addr.is_none())
        {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(("http", a)) => http_addr = Some(a),
                Ok(("admin", a)) => admin_addr = Some(a),
                Ok((_, a)) => addr = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "server did not start listening; stderr:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
        }
        let addr = addr.expect("protocol address");
        let http_addr = http_addr.unwrap_or(addr);
        Server {
            child,
            addr,
            http_addr,
            admin_addr,
            log,
        }
    }

    /// The protocol address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP front's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr.expect("the admin listener is on")
    }

    /// The base of the short URLs this server hands out (it follows the
    /// HTTP front's port unless `--public-url` is given).
    pub fn public_base(&self) -> String {
        format!("http://{}/", self.http_addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR` + `path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// A new client connection.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait; returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate();
        self.wait(Duration::from_secs(20))
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of another workspace package, found beside the running test's
/// own executable (`target/<profile>/`). `cargo test --workspace` builds it;
/// running one package's tests alone needs `cargo build -p <package>` first.
pub fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p {package}` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// Runs `binary` with `args` until it exits (at most `timeout`), returning
/// its status and standard error. For servers that must refuse to start,
/// and for the offline tools.
pub fn run_to_exit(binary: &Path, args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(binary)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    // Drained while the child runs: a tool that writes more than a pipe
    // holds (an export to standard output) would otherwise block forever.
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} did not exit within {timeout:?}", binary.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = stdout.join().unwrap_or_default();
    out.push_str(&stderr.join().unwrap_or_default());
    (status, out)
}

/// `true` when running under CI: the `CI` environment variable is `true`
/// or `1` (as GitHub Actions, GitLab and `.ci/run` set it).
pub fn under_ci() -> bool {
    ci_requires_tools(std::env::var("CI").ok().as_deref())
}

fn ci_requires_tools(ci: Option<&str>) -> bool {
    ci.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A case cannot run here because `what` is missing (`why` says how).
/// Under CI that fails the case: a check that silently did not run must
/// never look like one that passed. Elsewhere (a developer's machine
/// without the tool) it prints `SKIPPED: ...` and the caller returns.
pub fn missing_tool(what: &str, why: &str) {
    missing_tool_in(under_ci(), what, why);
}

fn missing_tool_in(ci: bool, what: &str, why: &str) {
    if ci {
        panic!("{what} is required under CI (CI=true) and is missing: {why}");
    }
    eprintln!("SKIPPED: {what} is not available here: {why}");
}

/// A small ext4 file system on a loop device, mounted in a temporary
/// directory and unmounted when dropped: for filling a disk on purpose.
pub struct LoopFs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl LoopFs {
    /// Makes and mounts an ext4 file system of `mib` MiB, or says why it
    /// cannot (not root, no `mkfs.ext4`, no loop devices) so the caller can
    /// skip.
    pub fn new(mib: u64) -> Result<LoopFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .map_err(|e| e.to_string())?;
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))?;
        Ok(LoopFs { dir, mounted: true })
    }

    /// The mounted file system's root.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.path()).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_fails_under_ci_and_skips_elsewhere() {
        assert!(ci_requires_tools(Some("true")));
        assert!(ci_requires_tools(Some("1")));
        assert!(!ci_requires_tools(None));
        assert!(!ci_requires_tools(Some("false")));
        missing_tool_in(false, "a tool", "not installed");
        let failed = std::panic::catch_unwind(|| missing_tool_in(true, "a tool", "not installed"));
        assert!(failed.is_err(), "a missing tool passed under CI");
    }
}
