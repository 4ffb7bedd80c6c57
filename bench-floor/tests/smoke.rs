//! Each null server, started on port 0, answers pipelined requests with a
//! 302 each and closes after a `Connection: close` request: the servers
//! `scripts/bench-floor.sh` measures do what the script assumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the server however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(binary: &str, args: &[&str]) -> (Running, String) {
    let mut child = Command::new(binary)
        .arg("127.0.0.1:0")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the null server");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{binary} said {line:?}"))
        .trim()
        .to_owned();
    (running, addr)
}

const GET: &str = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";

/// Reads `n` replies' heads (none has a body) and returns them.
fn read_replies(stream: &mut TcpStream, n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    while String::from_utf8_lossy(&got).matches("\r\n\r\n").count() < n {
        let k = stream.read(&mut buf).unwrap();
        assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..k]);
    }
    String::from_utf8(got).unwrap()
}

fn check(binary: &str, args: &[&str]) {
    let (_server, addr) = start(binary, args);
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Three pipelined requests, the third split across two writes.
    stream
        .write_all(format!("{GET}{GET}GET /x HT").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    stream.write_all(b"TP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let replies = read_replies(&mut stream, 3);
    assert_eq!(
        replies.matches("HTTP/1.1 302 Found\r\n").count(),
        3,
        "{replies}"
    );
    assert_eq!(
        replies
            .matches("Location: https://example.com/wrk-target\r\n")
            .count(),
        3
    );
    // Connection: close gets its reply, then the end of the stream.
    stream
        .write_all(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).expect("the server closes");
    assert!(rest.starts_with("HTTP/1.1 302 Found\r\n"), "{rest}");
    assert!(rest.contains("Connection: close\r\n"), "{rest}");
    // Still serving other connections.
    let mut again = TcpStream::connect(&addr).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    again.write_all(GET.as_bytes()).unwrap();
    assert!(read_replies(&mut again, 1).starts_with("HTTP/1.1 302 Found\r\n"));
}

#[test]
fn null_uring_answers() {
    for ring in ["defer", "coop", "plain"] {
        check(env!("CARGO_BIN_EXE_null-uring"), &["--ring", ring]);
    }
    // As scripts/bench-floor.sh runs it beside Shorty's default.
    check(
        env!("CARGO_BIN_EXE_null-uring"),
        &["--ring", "defer", "--defer-accept"],
    );
}

#[test]
fn null_tokio_answers() {
    check(env!("CARGO_BIN_EXE_null-tokio"), &[]);
}

#[test]
fn null_tokio_uring_answers() {
    for ring in ["coop", "plain"] {
        check(env!("CARGO_BIN_EXE_null-tokio-uring"), &["--ring", ring]);
    }
}
