//! The `shorty` command line against a real `shorty-uring`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use shorty_conformance::harness::{workspace_binary, Server};

fn shorty(server: &Server, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shorty"))
        .arg("--server")
        .arg(server.addr().to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &workspace_binary("shorty-uring", "shorty-server-uring"),
        dir.path(),
        &[],
    );
    (dir, server)
}

#[test]
fn shorten_resolve_ping_info() {
    let (_dir, server) = start();
    let out = shorty(
        &server,
        &["shorten", "https://a.example/1", "https://a.example/2"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shorts: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(shorts.len(), 2);
    let out = shorty(&server, &["resolve", &shorts[1]], "");
    assert_eq!(text(&out.stdout), "https://a.example/2\n");
    let out = shorty(&server, &["--legacy", "shorten", "https://a.example/3"], "");
    assert!(text(&out.stdout).starts_with(&server.public_base()));
    assert!(text(&shorty(&server, &["ping"], "").stdout).starts_with("pong from"));
    let info = text(&shorty(&server, &["info"], "").stdout);
    assert!(info.contains("max URL bytes:   8192"), "{info}");
    // The version the server speaks, not the one a HELLO 1 asked for.
    assert!(info.contains("protocol:        2"), "{info}");
}

#[test]
fn shorten_from_stdin_is_pipelined_one_line_per_url() {
    let (_dir, server) = start();
    let input: String = (0..2500)
        .map(|i| format!("https://stdin.example/{i}\n"))
        .collect();
    let out = shorty(&server, &["shorten", "-"], &input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shorts: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(shorts.len(), 2500);
    let out = shorty(&server, &["resolve", &shorts[2499]], "");
    assert_eq!(text(&out.stdout), "https://stdin.example/2499\n");
}

#[test]
fn failures_exit_non_zero_with_a_one_line_error() {
    let (_dir, server) = start();
    let out = shorty(&server, &["resolve", "0000000"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("404 NOT_FOUND"), "{err}");
    let out = shorty(
        &server,
        &["shorten", "https://ok.example/", "ftp://bad/"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the good URL is still printed"
    );
    assert!(text(&out.stderr).contains("422 INVALID_URL"));
    let out = Command::new(env!("CARGO_BIN_EXE_shorty"))
        .args(["--server", "127.0.0.1:1", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("shorty: cannot connect to 127.0.0.1:1"));
}

/// `GET /metrics` from the server's admin listener.
fn metrics(server: &Server) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(server.admin_addr()).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn shortens(server: &Server) -> u64 {
    let line = r#"shorty_requests_total{protocol="framed",op="shorten",result="ok"} "#;
    let text = metrics(server);
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn a_multi_process_resolve_bench_seeds_its_codes_once() {
    let (_dir, server) = start();
    let before = shortens(&server);
    let out = shorty(
        &server,
        &[
            "bench",
            "--json",
            "-c",
            "3",
            "-n",
            "300",
            "--processes",
            "3",
            "--mode",
            "pipeline",
            "--op",
            "resolve",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"ok\": 300"),
        "{}",
        text(&out.stdout)
    );
    // 1,000 codes made once, before the window, and shared by the three
    // workers; not 1,000 more per worker inside it.
    assert_eq!(shortens(&server) - before, 1000);
}

#[test]
fn bench_reports_json_for_every_mode() {
    let (_dir, server) = start();
    for args in [
        &[
            "bench", "--json", "-c", "4", "-n", "300", "--mode", "pipeline", "--depth", "8",
            "--op", "mix",
        ][..],
        &[
            "bench", "--json", "-c", "4", "-n", "100", "--mode", "connect", "--op", "resolve",
        ][..],
        &["--legacy", "bench", "--json", "-c", "3", "-n", "60"][..],
        &[
            "bench",
            "--json",
            "-c",
            "4",
            "-n",
            "100",
            "--processes",
            "2",
            "--mode",
            "pipeline",
        ][..],
    ] {
        let out = shorty(&server, args, "");
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let json = text(&out.stdout);
        let n: u64 = args[args.iter().position(|a| *a == "-n").unwrap() + 1]
            .parse()
            .unwrap();
        assert!(json.contains(&format!("\"ok\": {n}")), "{args:?}: {json}");
        assert!(json.contains("\"errors\": {}"), "{args:?}: {json}");
        assert!(json.contains("\"p99\""), "{json}");
    }
    let out = shorty(
        &server,
        &["--legacy", "bench", "--op", "resolve", "-n", "1"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
}
