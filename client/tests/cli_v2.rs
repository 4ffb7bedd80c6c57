//! The `shorty` link commands (protocol version 2) against the in-test
//! fake server (`fake/`).

mod fake;

use std::process::{Command, Output};

fn shorty(server: &fake::Fake, args: &[&str], key: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shorty"));
    command
        .arg("--server")
        .arg(server.addr.to_string())
        .args(args)
        .env_remove("SHORTY_API_KEY");
    if let Some(key) = key {
        command.env("SHORTY_API_KEY", key);
    }
    command.output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn shorten_with_options_info_update_stats_delete() {
    let server = fake::start(fake::Config::default());
    let out = shorty(
        &server,
        &[
            "shorten",
            "https://example.com/docs",
            "--alias",
            "docs",
            "--expires",
            "2027-01-01T00:00:00Z",
            "--max-clicks",
            "10",
            "--status",
            "301",
            "--title",
            "Docs",
        ],
        None,
    );
    assert_eq!(stdout(&out), "http://short.test/docs\n");

    let info: serde_json::Value =
        serde_json::from_str(&stdout(&shorty(&server, &["info", "docs", "--json"], None))).unwrap();
    assert_eq!(info["url"], "https://example.com/docs");
    assert_eq!(info["expiresAt"], "2027-01-01T00:00:00Z");
    assert_eq!(info["maxClicks"], 10);
    assert_eq!(info["redirectStatus"], 301);
    assert_eq!(info["title"], "Docs");

    let text = stdout(&shorty(
        &server,
        &[
            "update",
            "http://short.test/docs",
            "https://example.org/",
            "--no-expiry",
            "--disable",
        ],
        None,
    ));
    assert!(
        text.contains("URL:             https://example.org/\n"),
        "{text}"
    );
    assert!(text.contains("expires:         never\n"), "{text}");
    assert!(text.contains("disabled:        yes\n"), "{text}");

    let text = stdout(&shorty(&server, &["stats", "docs", "--hours", "24"], None));
    assert!(
        text.starts_with("docs: 5 clicks (4 human, 1 bot)\n"),
        "{text}"
    );
    // The fake's two buckets are the first and last hour asked for.
    let chart = text.lines().nth(5).unwrap();
    assert_eq!(chart.chars().count(), 24, "{text}");
    assert!(chart.starts_with('▆') && chart.ends_with('█'), "{text}");
    assert!(text.contains("  example.org  3\n"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&shorty(
        &server,
        &["stats", "docs", "--json"],
        None,
    )))
    .unwrap();
    assert_eq!(json["clicks"]["total"], 5);

    assert_eq!(stdout(&shorty(&server, &["delete", "docs"], None)), "");
    let out = shorty(&server, &["info", "docs"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[test]
fn the_api_key_from_the_environment_is_presented_first() {
    let server = fake::start(fake::Config {
        key: Some("sekret"),
        ..Default::default()
    });
    let out = shorty(
        &server,
        &["shorten", "https://example.com/", "--title", "T"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = shorty(
        &server,
        &["shorten", "https://example.com/", "--title", "T"],
        Some("sekret"),
    );
    assert_eq!(stdout(&out), "http://short.test/c000001\n");
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen[seen.len() - 3..], ["HELLO", "AUTH", "SHORTEN2"]);
}

#[test]
fn bad_options_are_refused_before_connecting() {
    let server = fake::start(fake::Config::default());
    for args in [
        &["shorten", "https://e.com/", "--status", "200"][..],
        &["shorten", "https://e.com/", "--expires", "someday"],
        &[
            "shorten",
            "https://a.com/",
            "https://b.com/",
            "--alias",
            "x",
        ],
        &["update", "docs"],
        &["shorten", "-", "--title", "T"],
    ] {
        let out = shorty(&server, args, None);
        assert!(!out.status.success(), "{args:?}");
    }
    assert!(server.seen.lock().unwrap().is_empty());
}
