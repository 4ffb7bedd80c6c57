//! The library against a real `shorty-uring`.

use std::path::PathBuf;

use shorty_client::{AsyncClient, Client, Error, ErrorCode, Reply, Request};
use shorty_conformance::harness::{workspace_binary, Server};

fn server_binary() -> PathBuf {
    workspace_binary("shorty-uring", "shorty-server-uring")
}

#[test]
fn blocking_client_round_trips_and_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&server_binary(), dir.path(), &["--max-url-bytes", "100"]);
    let mut client = Client::connect(server.addr()).unwrap();
    let info = client.hello().unwrap();
    assert_eq!((info.version, info.max_url_len), (1, 100));
    assert!(client.ping().unwrap().as_secs() < 10);

    let short = client.shorten("https://example.com/a").unwrap();
    assert!(short.starts_with(&server.public_base()));
    // Both the code and the whole short URL resolve.
    assert_eq!(client.resolve(&short).unwrap(), "https://example.com/a");
    assert_eq!(
        client.resolve(shorty_client::code_of(&short)).unwrap(),
        "https://example.com/a"
    );
    let legacy = client.shorten_legacy("https://example.com/b").unwrap();
    assert_eq!(client.resolve(&legacy).unwrap(), "https://example.com/b");

    // Server errors are typed and keep the connection.
    let err = client.resolve("0000000").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NOT_FOUND), "{err}");
    assert!(matches!(
        client.shorten("ftp://x/"),
        Err(Error::Server {
            code: ErrorCode::INVALID_URL,
            ..
        })
    ));
    assert!(matches!(
        client.shorten(&short),
        Err(Error::Server {
            code: ErrorCode::ALREADY_SHORT,
            ..
        })
    ));
    let long = format!("https://e.com/{}", "x".repeat(200));
    assert_eq!(
        client.shorten(&long).unwrap_err().code(),
        Some(ErrorCode::TOO_LARGE)
    );

    // Pipelined: every URL gets its own result, in order.
    let results = client
        .shorten_all(&["https://a.example/", "nope", "https://c.example/"])
        .unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    assert_eq!(
        results[1].as_ref().unwrap_err().code(),
        Some(ErrorCode::INVALID_URL)
    );
    assert_eq!(
        client.resolve(results[2].as_ref().unwrap()).unwrap(),
        "https://c.example/"
    );
    let replies = client
        .batch(&[Request::Ping(&b"x"[..]), Request::Resolve(&b"bad"[..])])
        .unwrap();
    assert_eq!(replies[0], Reply::Pong(bytes::Bytes::from_static(b"x")));
    assert_eq!(replies[1].as_error().unwrap().0, ErrorCode::NOT_FOUND);
}

#[test]
fn blocking_client_reconnects_after_the_connection_drops() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&server_binary(), dir.path(), &["--idle-timeout", "200ms"]);
    let mut client = Client::connect(server.addr()).unwrap();
    let short = client.shorten("https://example.com/r").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600)); // server closes the idle connection
                                                               // The first call may see the closed connection; the client then
                                                               // reconnects on the next one.
    let first = client.resolve(&short);
    let url = match first {
        Ok(url) => url,
        Err(Error::Io(_) | Error::Closed) => client.resolve(&short).unwrap(),
        Err(other) => panic!("{other}"),
    };
    assert_eq!(url, "https://example.com/r");
}

#[test]
fn connecting_to_nothing_is_an_io_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(matches!(Client::connect(free), Err(Error::Io(_))));
}

#[tokio::test]
async fn async_client_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&server_binary(), dir.path(), &[]);
    let mut client = AsyncClient::connect(server.addr()).await.unwrap();
    assert_eq!(client.hello().await.unwrap().version, 1);
    client.ping().await.unwrap();
    let short = client.shorten("https://example.com/async").await.unwrap();
    assert_eq!(
        client.resolve(&short).await.unwrap(),
        "https://example.com/async"
    );
    assert_eq!(
        client.resolve("0000000").await.unwrap_err().code(),
        Some(ErrorCode::NOT_FOUND)
    );
    let replies = client
        .batch(vec![
            Request::Shorten("https://a.example/"),
            Request::Ping("p"),
        ])
        .await
        .unwrap();
    assert!(matches!(replies[0], Reply::Shortened(_)));
    assert_eq!(replies[1], Reply::Pong(bytes::Bytes::from_static(b"p")));
}

#[test]
fn a_large_batch_of_large_replies_does_not_deadlock() {
    // 20,000 RESOLVEs of an 8 KB URL: 160 MB of replies against a server
    // that stops reading past 64 KiB of unsent replies. Written all at
    // once before reading, both sides would block.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &server_binary(),
        dir.path(),
        &["--max-output-bytes", "65536"],
    );
    let mut client = Client::connect(server.addr()).unwrap();
    let long = format!("https://example.com/{}", "x".repeat(8000));
    let short = client.shorten(&long).unwrap();
    let code = shorty_client::code_of(&short).to_owned();
    let requests: Vec<Request<&[u8]>> = (0..20_000)
        .map(|_| Request::Resolve(code.as_bytes()))
        .collect();
    let replies = client.batch(&requests).unwrap();
    assert_eq!(replies.len(), 20_000);
    assert!(replies
        .iter()
        .all(|r| matches!(r, Reply::Resolved(url) if url.len() == long.len())));
}

#[test]
fn a_timeout_reads_as_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&server_binary(), dir.path(), &["--delay", "1s"]);
    let options =
        shorty_client::Options::default().read_timeout(Some(std::time::Duration::from_millis(200)));
    let mut client = Client::connect_with(server.addr(), options).unwrap();
    let err = client.ping().unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(!err.to_string().contains("os error"), "{err}");
}

#[tokio::test]
async fn an_async_timeout_never_yields_a_stale_reply() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&server_binary(), dir.path(), &["--delay", "400ms"]);
    let options =
        shorty_client::Options::default().read_timeout(Some(std::time::Duration::from_millis(100)));
    let mut client = AsyncClient::connect_with(server.addr(), options)
        .await
        .unwrap();
    let short = client.shorten("https://example.com/slow").await;
    assert!(matches!(short, Err(Error::Timeout(_))), "{short:?}");
    // The late SHORTENED reply must not be taken for this PING's answer.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(matches!(client.ping().await, Err(Error::Closed)));
    // A fresh connection carries no stale replies.
    client.reconnect().await.unwrap();
    assert!(matches!(client.ping().await, Err(Error::Timeout(_))));
}
