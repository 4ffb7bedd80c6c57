//! The `shorty` link commands (protocol version 2) against a real
//! `shorty-uring`: shorten with --alias/--expires/--max-clicks/--status,
//! info, update, delete, and what a visitor then gets over HTTP.

use std::process::{Command, Output};

use shorty_conformance::harness::{workspace_binary, Server};

fn shorty(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shorty"))
        .arg("--server")
        .arg(server.addr().to_string())
        .args(args)
        .env_remove("SHORTY_API_KEY")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Status and `Location` of a GET of `path` on the server's HTTP front.
fn get(server: &Server, path: &str) -> (u16, Option<String>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.http_addr()).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let location = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or(l.strip_prefix("location: "))
        })
        .map(str::to_owned);
    (status, location)
}

#[test]
fn link_commands_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &workspace_binary("shorty-uring", "shorty-server-uring"),
        dir.path(),
        &[],
    );
    let base = server.public_base();
    let out = shorty(
        &server,
        &[
            "shorten",
            "https://example.com/docs",
            "--alias",
            "docs",
            "--expires",
            "7d",
            "--max-clicks",
            "2",
            "--status",
            "307",
            "--title",
            "Docs",
        ],
    );
    assert_eq!(stdout(&out), format!("{base}docs\n"));
    // Taken: the server's 409 reaches the user.
    let out = shorty(
        &server,
        &["shorten", "https://example.com/x", "--alias", "docs"],
    );
    assert!(stderr(&out).contains("409"), "{}", stderr(&out));

    let info: serde_json::Value =
        serde_json::from_str(&stdout(&shorty(&server, &["info", "docs", "--json"]))).unwrap();
    assert_eq!(info["url"], "https://example.com/docs");
    assert_eq!(info["shortUrl"], format!("{base}docs"));
    assert_eq!(info["maxClicks"], 2);
    assert_eq!(info["redirectStatus"], 307);
    assert_eq!(info["title"], "Docs");
    assert!(info["expiresAt"].is_string(), "{info}");

    assert_eq!(
        get(&server, "/docs"),
        (307, Some("https://example.com/docs".into()))
    );
    let text = stdout(&shorty(
        &server,
        &[
            "update",
            &format!("{base}docs"),
            "https://example.org/",
            "--no-expiry",
            "--no-max-clicks",
            "--status",
            "308",
        ],
    ));
    assert!(
        text.contains("URL:             https://example.org/\n"),
        "{text}"
    );
    assert!(text.contains("expires:         never\n"), "{text}");
    assert!(text.contains("max clicks:      unlimited\n"), "{text}");
    // No limit any more: more clicks than the old limit all redirect.
    for _ in 0..3 {
        assert_eq!(
            get(&server, "/docs"),
            (308, Some("https://example.org/".into()))
        );
    }
    let text = stdout(&shorty(&server, &["update", "docs", "--disable"]));
    assert!(text.contains("disabled:        yes\n"), "{text}");
    assert_eq!(get(&server, "/docs").0, 410);

    assert_eq!(stdout(&shorty(&server, &["delete", "docs"])), "");
    assert!(stderr(&shorty(&server, &["info", "docs"])).contains("404"));
    assert_eq!(get(&server, "/docs").0, 404);
    assert!(stderr(&shorty(&server, &["delete", "docs"])).contains("404"));
}
