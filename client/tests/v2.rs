//! The version-2 calls of `Client` and `AsyncClient` against the in-test
//! fake server (`fake/`): negotiation, AUTH, SHORTEN2, UPDATE, DELETE, INFO
//! and STATS.

mod fake;

use shorty_client::{
    AsyncClient, Client, Error, ErrorCode, Granularity, LinkOptions, LinkPatch, StatsQuery,
};

const HOUR: u64 = 3_600_000;

#[test]
fn the_link_lifecycle_over_protocol_version_2() {
    let server = fake::start(fake::Config::default());
    let mut client = Client::connect(server.addr).unwrap();
    assert_eq!(client.hello_v2().unwrap().version, 2);

    let mut options = LinkOptions::default();
    options.alias = Some("docs");
    options.expires_at_ms = Some(1_798_761_600_000);
    options.max_clicks = Some(10);
    options.redirect_status = Some(307);
    options.title = Some("Docs");
    let link = client
        .shorten_with("https://example.com/docs", &options)
        .unwrap();
    assert_eq!(link.code, "docs");
    assert_eq!(link.url, "https://example.com/docs");
    assert_eq!(link.short_url.as_deref(), Some("http://short.test/docs"));
    assert_eq!(
        (link.max_clicks, link.redirect_status),
        (Some(10), Some(307))
    );

    // The same alias again: 409.
    let err = client
        .shorten_with("https://example.com/x", &options)
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CONFLICT), "{err}");

    let mut patch = LinkPatch::default();
    patch.url = Some("https://example.org/");
    patch.expires_at_ms = Some(None);
    patch.disabled = Some(true);
    let link = client.update("http://short.test/docs", &patch).unwrap();
    assert_eq!(link.url, "https://example.org/");
    assert_eq!(link.expires_at_ms, None);
    assert!(link.disabled);
    assert_eq!(client.info("docs").unwrap(), link);

    let stats = client
        .stats(
            "docs",
            StatsQuery::new(10 * HOUR, 12 * HOUR, Granularity::Hour),
        )
        .unwrap();
    assert_eq!((stats.total, stats.human, stats.bot), (5, 4, 1));
    assert_eq!(stats.series.len(), 2);
    assert_eq!(stats.series[1].start_ms, 11 * HOUR);
    assert_eq!(stats.referrers, [("example.org".to_owned(), 3)]);

    client.delete("docs").unwrap();
    assert_eq!(
        client.info("docs").unwrap_err().code(),
        Some(ErrorCode::NOT_FOUND)
    );
    assert_eq!(
        client.delete("docs").unwrap_err().code(),
        Some(ErrorCode::NOT_FOUND)
    );
    // Version-1 calls keep working on the version-2 connection.
    assert!(client.shorten("https://example.com/").is_ok());
}

#[test]
fn version_2_calls_negotiate_by_themselves_and_refuse_a_version_1_server() {
    let server = fake::start(fake::Config::default());
    let mut client = Client::connect(server.addr).unwrap();
    client.info("nothing").unwrap_err();
    assert_eq!(server.seen.lock().unwrap()[..], ["HELLO", "INFO"]);

    let old = fake::start(fake::Config {
        max_version: 1,
        ..Default::default()
    });
    let mut client = Client::connect(old.addr).unwrap();
    let err = client.info("docs").unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionUnsupported {
                wanted: 2,
                server: 1,
                ..
            }
        ),
        "{err:?}"
    );
    // Nothing but HELLO reached the old server.
    assert_eq!(old.seen.lock().unwrap()[..], ["HELLO"]);
}

#[test]
fn an_api_key_is_presented_and_presented_again_on_a_new_connection() {
    let server = fake::start(fake::Config {
        key: Some("sekret"),
        ..Default::default()
    });
    let mut client = Client::connect(server.addr).unwrap();
    let err = client
        .shorten_with("https://example.com/", &LinkOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNAUTHORIZED));
    assert_eq!(
        client.auth("wrong").unwrap_err().code(),
        Some(ErrorCode::UNAUTHORIZED)
    );
    client.auth("sekret").unwrap();
    let link = client
        .shorten_with("https://example.com/", &LinkOptions::default())
        .unwrap();
    assert_eq!(link.code, "c000001");

    // A new client on a new connection with the key: AUTH before the write.
    let mut client = Client::connect(server.addr).unwrap();
    client.auth("sekret").unwrap();
    client.delete(&link.code).unwrap();
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen[seen.len() - 3..], ["HELLO", "AUTH", "DELETE"]);
}

#[test]
fn options_that_do_not_encode_are_refused_before_sending() {
    let server = fake::start(fake::Config::default());
    let mut client = Client::connect(server.addr).unwrap();
    let mut options = LinkOptions::default();
    options.alias = Some("no/slash");
    let err = client
        .shorten_with("https://example.com/", &options)
        .unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    options.alias = None;
    options.redirect_status = Some(200);
    assert!(matches!(
        client.shorten_with("https://example.com/", &options),
        Err(Error::Protocol(_))
    ));
}

#[tokio::test]
async fn the_async_client_speaks_version_2_too() {
    let server = fake::start(fake::Config {
        key: Some("sekret"),
        ..Default::default()
    });
    let mut client = AsyncClient::connect(server.addr).await.unwrap();
    client.auth("sekret").await.unwrap();
    let mut options = LinkOptions::default();
    options.alias = Some("a-1");
    let link = client
        .shorten_with("https://example.com/", &options)
        .await
        .unwrap();
    assert_eq!(link.code, "a-1");
    let mut patch = LinkPatch::default();
    patch.title = Some(Some("T"));
    assert_eq!(
        client.update("a-1", &patch).await.unwrap().title.as_deref(),
        Some("T")
    );
    assert_eq!(
        client.info("a-1").await.unwrap().title.as_deref(),
        Some("T")
    );
    let stats = client
        .stats("a-1", StatsQuery::new(0, 2 * HOUR, Granularity::Hour))
        .await
        .unwrap();
    assert_eq!(stats.total, 5);
    client.delete("a-1").await.unwrap();
    assert_eq!(
        client.info("a-1").await.unwrap_err().code(),
        Some(ErrorCode::NOT_FOUND)
    );
    // After a reconnect the key is presented again before the next call.
    client.reconnect().await.unwrap();
    client
        .shorten_with("https://example.com/", &LinkOptions::default())
        .await
        .unwrap();
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen[seen.len() - 3..], ["HELLO", "AUTH", "SHORTEN2"]);
}

#[test]
fn a_client_never_prints_its_api_key() {
    let server = fake::start(fake::Config {
        key: Some("sekret-key-material"),
        ..Default::default()
    });
    let mut client = Client::connect(server.addr).unwrap();
    client.auth("sekret-key-material").unwrap();
    let debug = format!("{client:?}");
    assert!(!debug.contains("sekret"), "{debug}");
    // Nor as bytes.
    assert!(
        !debug.contains(&format!("{:?}", b"sekret")[1..10]),
        "{debug}"
    );
    assert!(debug.contains("<redacted>"), "{debug}");
}
