//! Moving links between backends: export from a shorty-uring data
//! directory, import into a shorty-glommio one, every code resolves to the
//! same URL.
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use shorty_conformance::harness::{run_to_exit, workspace_binary, Server};
use shorty_conformance::wire::code_of;
use shorty_protocol::Reply;

#[test]
fn links_move_from_uring_to_glommio_with_their_codes() {
    let uring = workspace_binary("shorty-uring", "shorty-server-uring");
    let glommio = Path::new(env!("CARGO_BIN_EXE_shorty-glommio"));
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Server::start(&uring, from.path(), &[]);
    let mut conn = server.connect();
    let links: Vec<(String, String)> = (0..100)
        .map(|i| {
            let url = format!("https://example.com/migrate/{i}");
            (code_of(&conn.shorten(&url)).to_owned(), url)
        })
        .collect();
    assert!(server.stop().success());
    let dump = to.path().join("links.jsonl");
    let timeout = Duration::from_secs(30);
    let (status, out) = run_to_exit(
        &uring,
        &[
            "export",
            "--data-dir",
            from.path().to_str().unwrap(),
            dump.to_str().unwrap(),
        ],
        timeout,
    );
    assert!(status.success(), "{out}");
    let data = to.path().join("data");
    let (status, out) = run_to_exit(
        glommio,
        &[
            "import",
            "--data-dir",
            data.to_str().unwrap(),
            dump.to_str().unwrap(),
        ],
        timeout,
    );
    assert!(
        status.success() && out.contains("imported 100 links"),
        "{out}"
    );
    let server = Server::start(glommio, &data, &[]);
    let mut conn = server.connect();
    for (code, url) in &links {
        assert_eq!(
            conn.resolve(code),
            Reply::Resolved(Bytes::from(url.clone()))
        );
    }
}
