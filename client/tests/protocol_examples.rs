//! `shorty-protocol`'s tokio example (`protocol/examples/tokio_client.rs`),
//! the binary itself, against a real `shorty-uring`: the example a new user
//! copies first must keep working.

use std::path::PathBuf;
use std::process::Command;

use shorty_conformance::harness::{workspace_binary, Server};

/// The example's binary, built by `cargo test --workspace --all-features`
/// (examples are built with the tests) into `target/<profile>/examples/`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("examples")
        .join(format!("tokio_client{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p shorty-protocol --features tokio-codec \
         --example tokio_client` (or `cargo test --workspace --all-features`)",
        path.display()
    );
    path
}

#[test]
fn the_tokio_example_shortens_and_resolves_against_shorty_uring() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &workspace_binary("shorty-uring", "shorty-server-uring"),
        dir.path(),
        &[],
    );
    let url = "https://example.com/from/the/tokio/example";
    // The example bounds each reply by a timeout of its own, so this ends.
    let out = Command::new(example_binary())
        .arg(server.addr().to_string())
        .arg(url)
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "version 1");
    assert!(lines[1].starts_with(&server.public_base()), "{stdout}");
    assert_eq!(lines[2], url);

    // A URL the server refuses makes the example fail with the server's
    // error, not hang or print a wrong URL.
    let out = Command::new(example_binary())
        .arg(server.addr().to_string())
        .arg("ftp://example.com/")
        .output()
        .expect("run the example");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("422 INVALID_URL"), "{stderr}");
}
