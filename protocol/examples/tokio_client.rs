//! A tokio client for a running Shorty server: HELLO, then SHORTEN a URL,
//! then RESOLVE the code it got back.
//!
//! ```sh
//! cargo run -p shorty-protocol --features tokio-codec --example tokio_client -- \
//!     127.0.0.1:9000 https://example.com/a/long/path
//! ```
//!
//! Prints three lines: `version N`, the short URL, and the long URL the
//! short one resolves to. CI runs it against a `shorty-uring` it starts
//! (`client/tests/protocol_examples.rs`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shorty_protocol::codec::ClientCodec;
use shorty_protocol::{short_code, Reply, Request, PROTOCOL_V1};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends `request` and returns the reply that answers it. Server errors and
/// replies of the wrong kind become errors ([`Reply::into_answer`]).
async fn call(
    conn: &mut Framed<TcpStream, ClientCodec>,
    request: Request<&[u8]>,
) -> Result<Reply, BoxError> {
    conn.send(request.clone()).await?;
    // A server that stops answering must not hang the caller forever.
    let reply = tokio::time::timeout(Duration::from_secs(10), conn.next())
        .await
        .map_err(|_| "no reply within 10 s")?
        .ok_or("the server closed the connection")??;
    Ok(reply.into_answer(&request)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(url)) = (args.next(), args.next()) else {
        eprintln!("usage: tokio_client ADDR URL");
        std::process::exit(2);
    };
    // `Display`, not the `Debug` a `main` returning `Err` would print.
    if let Err(err) = run(&addr, &url).await {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

async fn run(addr: &str, url: &str) -> Result<(), BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let mut conn = Framed::new(stream, ClientCodec::new());

    // Ask for the version this code speaks, not the crate's highest.
    let Reply::Hello(info) = call(&mut conn, Request::hello(PROTOCOL_V1)).await? else {
        return Err("HELLO answered with something else".into());
    };
    println!("version {}", info.version);

    let shortened = call(&mut conn, Request::Shorten(url.as_bytes())).await?;
    let short = shortened.as_str().ok_or("short URL is not UTF-8")?;
    println!("{short}");

    // RESOLVE takes the code, not the whole short URL.
    let code = short_code(short);
    let resolved = call(&mut conn, Request::Resolve(code.as_bytes())).await?;
    println!("{}", resolved.as_str().ok_or("URL is not UTF-8")?);
    Ok(())
}
