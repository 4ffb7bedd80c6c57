//! `shorty-baseline`: the usual stack, for side-by-side benchmarks only
//! (`scripts/bench-peers.sh`): a tokio multi-threaded runtime, tokio-util's
//! `LengthDelimitedCodec` (u32 little-endian, the Shorty framing), and the
//! Shorty protocol from `shorty-protocol`. SHORTEN stores the URL in a
//! mutex-guarded `HashMap` under a counter-derived code and RESOLVE looks it
//! up.
//!
//! It does strictly less work than Shorty: no URL validation, no durable
//! log (nothing survives a restart), no timeouts or limits. Whatever it
//! costs per request is a floor for what a straightforward tokio server
//! costs, which is what Shorty is compared against.
//!
//! Usage: `shorty-baseline [ADDR [WORKER_THREADS]]`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use shorty_protocol::{ErrorCode, Reply, Request};
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

#[derive(Default)]
struct Store {
    next: AtomicU64,
    urls: Mutex<HashMap<u64, Bytes>>,
}

fn encode(reply: &Reply<&[u8]>) -> Bytes {
    // The reply without its frame header: the codec adds the length.
    let mut out = BytesMut::new();
    let _ = reply.encode_frame(&mut out);
    out.split_off(4).freeze()
}

fn handle(store: &Store, public: &str, payload: &[u8]) -> Bytes {
    match Request::parse_payload(payload) {
        Ok(Request::Shorten(url)) | Ok(Request::Bare(url)) => {
            let id = store.next.fetch_add(1, Ordering::Relaxed);
            store
                .urls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Bytes::copy_from_slice(url));
            let short = format!("{public}{id:07}");
            encode(&Reply::Shortened(short.as_bytes()))
        }
        Ok(Request::Resolve(code)) => {
            let id = std::str::from_utf8(code)
                .ok()
                .and_then(|c| c.parse::<u64>().ok());
            let urls = store.urls.lock().unwrap_or_else(|p| p.into_inner());
            match id.and_then(|id| urls.get(&id)) {
                Some(url) => encode(&Reply::Resolved(&url[..])),
                None => encode(&Reply::error(
                    ErrorCode::NOT_FOUND,
                    b"no URL is stored under this code",
                )),
            }
        }
        Ok(Request::Ping(body)) => encode(&Reply::Pong(body)),
        _ => encode(&Reply::error(
            ErrorCode::MALFORMED,
            b"not supported by the baseline",
        )),
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9500".into());
    let public = "http://127.0.0.1:5000/".to_owned();
    // Worker threads: the second argument, or tokio's default (one per core).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = std::env::args().nth(2).and_then(|t| t.parse().ok()) {
        builder.worker_threads(threads);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        eprintln!("shorty-baseline listening on {addr}");
        let store = Arc::new(Store::default());
        loop {
            let (socket, _) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            let (store, public) = (store.clone(), public.clone());
            tokio::spawn(async move {
                let codec = LengthDelimitedCodec::builder()
                    .little_endian()
                    .length_field_length(4)
                    .max_frame_length(8192 + 64)
                    .new_codec();
                let mut framed = Framed::new(socket, codec);
                while let Some(Ok(frame)) = framed.next().await {
                    let reply = handle(&store, &public, &frame);
                    // Feed, and flush only when no more requests are
                    // buffered: pipelined replies go out together.
                    if framed.feed(reply).await.is_err() {
                        return;
                    }
                    if framed.read_buffer().is_empty()
                        && SinkExt::<Bytes>::flush(&mut framed).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    })
}
