//! A small in-test server speaking protocol version 2 over loopback (port
//! 0), with an in-memory link table: enough for the client and the CLI to
//! be tested before the real server grows version 2.

#![allow(dead_code)] // Each test binary uses part of it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::BytesMut;
use shorty_client::Link;
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::link::{Bucket, LinkInfo, LinkOptions, LinkPatch, LinkStats, Referrer};
use shorty_protocol::{ErrorCode, Reply, Request, ServerInfo};

/// When every link in the table was made.
pub(crate) const CREATED_AT_MS: u64 = 1_764_547_200_000;

/// What the fake answers.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The highest version it speaks (1 plays an old server).
    pub(crate) max_version: u8,
    /// A key that must be presented (AUTH) before any version-2 write.
    pub(crate) key: Option<&'static str>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_version: 2,
            key: None,
        }
    }
}

/// A running fake; its thread lives as long as the test process.
pub(crate) struct Fake {
    pub(crate) addr: SocketAddr,
    /// The names of the requests it received, in order, over all
    /// connections.
    pub(crate) seen: Arc<Mutex<Vec<String>>>,
    pub(crate) links: Arc<Mutex<HashMap<String, Link>>>,
}

pub(crate) fn start(config: Config) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let links = Arc::new(Mutex::new(HashMap::new()));
    let (s, l) = (seen.clone(), links.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let (config, s, l) = (config.clone(), s.clone(), l.clone());
            thread::spawn(move || serve(stream.unwrap(), config, s, l));
        }
    });
    Fake { addr, seen, links }
}

fn serve(
    mut stream: TcpStream,
    config: Config,
    seen: Arc<Mutex<Vec<String>>>,
    links: Arc<Mutex<HashMap<String, Link>>>,
) {
    let decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let (mut version, mut authed) = (1u8, false);
    loop {
        let payload = match decoder.decode(&mut buf) {
            Ok(Status::Complete(payload)) => payload,
            Ok(Status::Partial { .. }) => {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            }
            Err(_) => return,
        };
        let reply: Reply<Vec<u8>> = match Request::parse_payload_for(version, &payload) {
            Err(err) => Reply::error(err.error_code(), err.to_string().into_bytes()),
            Ok(request) => {
                seen.lock().unwrap().push(request.name().to_owned());
                let mut links = links.lock().unwrap();
                answer(request, &config, &mut version, &mut authed, &mut links)
            }
        };
        let mut wire = Vec::new();
        reply.encode_frame(&mut wire).unwrap();
        if stream.write_all(&wire).is_err() {
            return;
        }
    }
}

fn error(code: ErrorCode, message: &str) -> Reply<Vec<u8>> {
    Reply::error(code, message.as_bytes().to_vec())
}

fn info_of(link: &Link) -> Vec<u8> {
    let mut i = LinkInfo::new(&link.code, &link.url);
    i.short_url = link.short_url.as_deref();
    i.created_at_ms = link.created_at_ms;
    i.expires_at_ms = link.expires_at_ms;
    i.max_clicks = link.max_clicks;
    i.redirect_status = link.redirect_status;
    i.expired_url = link.expired_url.as_deref();
    i.disabled = link.disabled;
    i.title = link.title.as_deref();
    i.forward_query = link.forward_query;
    i.clicks_total = link.clicks_total;
    i.clicks_human = link.clicks_human;
    i.clicks_bot = link.clicks_bot;
    i.last_click_at_ms = link.last_click_at_ms;
    i.to_vec().unwrap()
}

fn answer(
    request: Request<&[u8]>,
    config: &Config,
    version: &mut u8,
    authed: &mut bool,
    links: &mut HashMap<String, Link>,
) -> Reply<Vec<u8>> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let may_write = config.key.is_none() || *authed;
    match request {
        Request::Hello { version: asked, .. } => {
            *version = asked.min(config.max_version);
            Reply::Hello(ServerInfo::new(*version, 65_536, 8_192))
        }
        Request::Auth(key) => {
            if config.key.map(str::as_bytes) == Some(key) {
                *authed = true;
                Reply::Authed
            } else {
                error(ErrorCode::UNAUTHORIZED, "unknown key")
            }
        }
        Request::Shorten2(_) | Request::Update { .. } | Request::Delete(_) if !may_write => {
            error(ErrorCode::UNAUTHORIZED, "a key is required")
        }
        Request::Shorten2(body) => {
            let o = LinkOptions::parse(body).unwrap();
            let code = match o.alias {
                Some(alias) => alias.to_owned(),
                None => format!("c{:06}", links.len() + 1),
            };
            if links.contains_key(&code) {
                return error(ErrorCode::CONFLICT, "alias taken");
            }
            let mut link = Link::default();
            link.code = code.clone();
            link.short_url = Some(format!("http://short.test/{code}"));
            link.url = o.url.to_owned();
            link.created_at_ms = Some(CREATED_AT_MS);
            link.expires_at_ms = o.expires_at_ms;
            link.max_clicks = o.max_clicks;
            link.redirect_status = o.redirect_status;
            link.expired_url = o.expired_url.map(str::to_owned);
            link.title = o.title.map(str::to_owned);
            link.forward_query = o.forward_query;
            let reply = Reply::Shortened2(info_of(&link));
            links.insert(code, link);
            reply
        }
        Request::Update { code, patch, .. } => {
            let Some(link) = links.get_mut(&text(code)) else {
                return error(ErrorCode::NOT_FOUND, "no such link");
            };
            let p = LinkPatch::parse(patch).unwrap();
            if let Some(url) = p.url {
                link.url = url.to_owned();
            }
            if let Some(v) = p.expires_at_ms {
                link.expires_at_ms = v;
            }
            if let Some(v) = p.max_clicks {
                link.max_clicks = v;
            }
            if let Some(v) = p.redirect_status {
                link.redirect_status = v;
            }
            if let Some(v) = p.expired_url {
                link.expired_url = v.map(str::to_owned);
            }
            if let Some(v) = p.disabled {
                link.disabled = v;
            }
            if let Some(v) = p.title {
                link.title = v.map(str::to_owned);
            }
            if let Some(v) = p.forward_query {
                link.forward_query = v;
            }
            Reply::Updated(info_of(link))
        }
        Request::Delete(code) => match links.remove(&text(code)) {
            Some(_) => Reply::Deleted,
            None => error(ErrorCode::NOT_FOUND, "no such link"),
        },
        Request::Info(code) => match links.get(&text(code)) {
            Some(link) => Reply::Info(info_of(link)),
            None => error(ErrorCode::NOT_FOUND, "no such link"),
        },
        Request::Stats { code, query, .. } => {
            if !links.contains_key(&text(code)) {
                return error(ErrorCode::NOT_FOUND, "no such link");
            }
            // Fixed figures: 2 clicks in the first bucket asked for, 3 in
            // the last, 4 by people and 1 by a bot.
            let width = query.granularity.millis();
            let mut s = LinkStats::default();
            (s.total, s.human, s.bot) = (5, 4, 1);
            s.first_click_at_ms = Some(query.from_ms + 60_000);
            s.last_click_at_ms = Some(query.to_ms - width + 60_000);
            s.granularity = Some(query.granularity);
            s.series = vec![
                Bucket {
                    start_ms: query.from_ms,
                    count: 2,
                },
                Bucket {
                    start_ms: query.to_ms - width,
                    count: 3,
                },
            ];
            s.referrers = vec![Referrer {
                host: "example.org",
                count: 3,
            }];
            Reply::Stats(s.to_vec().unwrap())
        }
        Request::Shorten(url) => {
            Reply::Shortened(format!("http://short.test/{}", text(url).len()).into_bytes())
        }
        _ => error(ErrorCode::UNKNOWN_OPCODE, "not in the fake"),
    }
}
