//! Property tests for protocol version 2: every new message and every typed
//! TLV view round-trips, version 1 refuses the new requests, and arbitrary
//! bytes never panic and re-encode identically when they decode.

use proptest::prelude::*;
use shorty_protocol::frame::{parse_frame, Status};
use shorty_protocol::link::{
    Bucket, Granularity, LinkInfo, LinkOptions, LinkPatch, LinkStats, Referrer, StatsQuery,
    MAX_REFERRERS,
};
use shorty_protocol::{Error, Reply, Request, PROTOCOL_V1, PROTOCOL_V2};

/// URLs a link may hold: non-empty, no control character.
fn url() -> impl Strategy<Value = String> {
    "[^\\x00-\\x1f]{1,40}"
}

fn code() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn status() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![301u16, 302, 307, 308])
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![Just(Granularity::Hour), Just(Granularity::Day)]
}

/// The owned values a [`LinkOptions`] borrows.
#[derive(Debug, Clone)]
struct Options {
    url: String,
    alias: Option<String>,
    expires: Option<u64>,
    max_clicks: Option<u64>,
    status: Option<u16>,
    expired_url: Option<String>,
    title: Option<String>,
    forward_query: Option<bool>,
}

fn options() -> impl Strategy<Value = Options> {
    (
        url(),
        prop::option::of(code()),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        prop::option::of(status()),
        prop::option::of(url()),
        prop::option::of(".{0,20}"),
        any::<Option<bool>>(),
    )
        .prop_map(
            |(url, alias, expires, max_clicks, status, expired_url, title, forward_query)| {
                Options {
                    url,
                    alias,
                    expires,
                    max_clicks,
                    status,
                    expired_url,
                    title,
                    forward_query,
                }
            },
        )
}

impl Options {
    fn view(&self) -> LinkOptions<'_> {
        let mut o = LinkOptions::new(&self.url);
        o.alias = self.alias.as_deref();
        o.expires_at_ms = self.expires;
        o.max_clicks = self.max_clicks;
        o.redirect_status = self.status;
        o.expired_url = self.expired_url.as_deref();
        o.title = self.title.as_deref();
        o.forward_query = self.forward_query;
        o
    }
}

/// Keep / clear / set.
fn change<T: std::fmt::Debug + Clone>(
    value: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<Option<T>>> {
    prop_oneof![
        Just(None),
        Just(Some(None)),
        value.prop_map(|v| Some(Some(v)))
    ]
}

#[derive(Debug, Clone)]
struct Patch {
    url: Option<String>,
    expires: Option<Option<u64>>,
    max_clicks: Option<Option<u64>>,
    status: Option<Option<u16>>,
    expired_url: Option<Option<String>>,
    disabled: Option<bool>,
    title: Option<Option<String>>,
    forward_query: Option<Option<bool>>,
}

fn patch() -> impl Strategy<Value = Patch> {
    (
        prop::option::of(url()),
        change(any::<u64>()),
        change(any::<u64>()),
        change(status()),
        change(url()),
        any::<Option<bool>>(),
        change(".{1,20}"),
        change(any::<bool>()),
    )
        .prop_map(
            |(url, expires, max_clicks, status, expired_url, disabled, title, forward_query)| {
                Patch {
                    url,
                    expires,
                    max_clicks,
                    status,
                    expired_url,
                    disabled,
                    title,
                    forward_query,
                }
            },
        )
}

impl Patch {
    fn view(&self) -> LinkPatch<'_> {
        let mut p = LinkPatch::default();
        p.url = self.url.as_deref();
        p.expires_at_ms = self.expires;
        p.max_clicks = self.max_clicks;
        p.redirect_status = self.status;
        p.expired_url = self.expired_url.as_ref().map(|v| v.as_deref());
        p.disabled = self.disabled;
        p.title = self.title.as_ref().map(|v| v.as_deref());
        p.forward_query = self.forward_query;
        p
    }
}

#[derive(Debug, Clone)]
struct Info {
    code: String,
    url: String,
    short_url: Option<String>,
    title: Option<String>,
    status: Option<u16>,
    disabled: bool,
    owner: Option<u32>,
    numbers: [Option<u64>; 8],
    forward_query: Option<bool>,
}

fn info() -> impl Strategy<Value = Info> {
    (
        code(),
        url(),
        prop::option::of(url()),
        prop::option::of(".{0,20}"),
        prop::option::of(status()),
        any::<bool>(),
        any::<Option<u32>>(),
        any::<[Option<u64>; 8]>(),
        any::<Option<bool>>(),
    )
        .prop_map(
            |(code, url, short_url, title, status, disabled, owner, numbers, forward_query)| Info {
                code,
                url,
                short_url,
                title,
                status,
                disabled,
                owner,
                numbers,
                forward_query,
            },
        )
}

impl Info {
    fn view(&self) -> LinkInfo<'_> {
        let mut i = LinkInfo::new(&self.code, &self.url);
        i.short_url = self.short_url.as_deref();
        i.title = self.title.as_deref();
        i.redirect_status = self.status;
        i.disabled = self.disabled;
        i.owner_key_id = self.owner;
        [
            i.created_at_ms,
            i.expires_at_ms,
            i.max_clicks,
            i.version,
            i.clicks_total,
            i.clicks_human,
            i.clicks_bot,
            i.last_click_at_ms,
        ] = self.numbers;
        i.expired_url = self.short_url.as_deref();
        i.forward_query = self.forward_query;
        i
    }
}

#[derive(Debug, Clone)]
struct Stats {
    totals: (u64, u64, u64),
    first: Option<u64>,
    last: Option<u64>,
    granularity: Option<Granularity>,
    series: Vec<(u64, u64)>,
    referrers: Vec<(String, u64)>,
}

fn stats() -> impl Strategy<Value = Stats> {
    (
        any::<(u64, u64, u64)>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        prop::option::of(granularity()),
        prop::collection::vec(any::<(u64, u64)>(), 0..60),
        prop::collection::vec(("[a-z0-9.-]{1,30}", any::<u64>()), 0..=MAX_REFERRERS),
    )
        .prop_map(
            |(totals, first, last, granularity, series, referrers)| Stats {
                totals,
                first,
                last,
                granularity,
                series,
                referrers,
            },
        )
}

impl Stats {
    fn view(&self) -> LinkStats<'_> {
        let mut s = LinkStats::default();
        (s.total, s.human, s.bot) = self.totals;
        s.first_click_at_ms = self.first;
        s.last_click_at_ms = self.last;
        s.granularity = self.granularity;
        s.series = self
            .series
            .iter()
            .map(|&(start_ms, count)| Bucket { start_ms, count })
            .collect();
        s.referrers = self
            .referrers
            .iter()
            .map(|(host, count)| Referrer {
                host,
                count: *count,
            })
            .collect();
        s
    }
}

fn request() -> impl Strategy<Value = Request<Vec<u8>>> {
    prop_oneof![
        options().prop_map(|o| Request::Shorten2(o.view().to_vec().unwrap())),
        (code(), patch())
            .prop_map(|(c, p)| Request::update(c.into_bytes(), p.view().to_vec().unwrap())),
        code().prop_map(|c| Request::Delete(c.into_bytes())),
        code().prop_map(|c| Request::Info(c.into_bytes())),
        prop::collection::vec(any::<u8>(), 1..=256).prop_map(Request::Auth),
        (code(), any::<(u64, u64)>(), granularity()).prop_map(|(c, (from, to), g)| {
            Request::stats(c.into_bytes(), StatsQuery::new(from, to, g))
        }),
    ]
}

fn reply() -> impl Strategy<Value = Reply<Vec<u8>>> {
    prop_oneof![
        info().prop_map(|i| Reply::Shortened2(i.view().to_vec().unwrap())),
        info().prop_map(|i| Reply::Updated(i.view().to_vec().unwrap())),
        info().prop_map(|i| Reply::Info(i.view().to_vec().unwrap())),
        Just(Reply::Deleted),
        Just(Reply::Authed),
        stats().prop_map(|s| Reply::Stats(s.view().to_vec().unwrap())),
    ]
}

fn payload(wire: &[u8]) -> &[u8] {
    match parse_frame(wire, usize::MAX) {
        Ok(Status::Complete(frame)) => {
            assert_eq!(frame.encoded_len(), wire.len());
            frame.payload()
        }
        other => panic!("an encoded message is one complete frame: {other:?}"),
    }
}

proptest! {
    #[test]
    fn typed_views_round_trip(o in options(), p in patch(), i in info(), s in stats()) {
        let (o, p, i, s) = (o.view(), p.view(), i.view(), s.view());
        let bytes = o.to_vec().unwrap();
        prop_assert_eq!(bytes.len(), o.encoded_len());
        prop_assert_eq!(LinkOptions::parse(&bytes).unwrap(), o);
        let bytes = p.to_vec().unwrap();
        prop_assert_eq!(bytes.len(), p.encoded_len());
        prop_assert_eq!(LinkPatch::parse(&bytes).unwrap(), p);
        let bytes = i.to_vec().unwrap();
        prop_assert_eq!(bytes.len(), i.encoded_len());
        prop_assert_eq!(LinkInfo::parse(&bytes).unwrap(), i);
        let bytes = s.to_vec().unwrap();
        prop_assert_eq!(bytes.len(), s.encoded_len());
        prop_assert_eq!(LinkStats::parse(&bytes).unwrap(), s);
    }

    #[test]
    fn v2_requests_round_trip_and_v1_refuses_them(req in request()) {
        let mut wire = Vec::new();
        req.encode_frame(&mut wire).unwrap();
        prop_assert_eq!(wire.len(), req.frame_len());
        let payload = payload(&wire);
        prop_assert_eq!(Request::parse_payload_for(PROTOCOL_V2, payload), Ok(req.as_borrowed()));
        prop_assert_eq!(
            Request::parse_payload_for(PROTOCOL_V1, payload),
            Err(Error::UnknownOpcode(payload[0]))
        );
    }

    #[test]
    fn v2_replies_round_trip_and_v1_keeps_them_unknown(rep in reply()) {
        let mut wire = Vec::new();
        rep.encode_frame(&mut wire).unwrap();
        prop_assert_eq!(wire.len(), rep.frame_len());
        let payload = payload(&wire);
        prop_assert_eq!(Reply::parse_payload_for(PROTOCOL_V2, payload), Ok(rep.as_borrowed()));
        let v1 = Reply::parse_payload_for(PROTOCOL_V1, payload);
        prop_assert!(matches!(v1, Ok(Reply::Unknown { .. })), "{:?}", v1);
    }

    #[test]
    fn arbitrary_v2_payloads_never_panic_and_reencode_identically(
        op in 0u8..=0x1f,
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![op];
        bytes.extend_from_slice(&body);
        if let Ok(req) = Request::parse_payload_for(PROTOCOL_V2, &bytes) {
            let mut out = Vec::new();
            req.encode_payload(&mut out).unwrap();
            prop_assert_eq!(&out, &bytes);
        }
        if let Ok(rep) = Reply::parse_payload_for(PROTOCOL_V2, &bytes) {
            let mut out = Vec::new();
            rep.encode_payload(&mut out).unwrap();
            prop_assert_eq!(&out, &bytes);
        }
        let _ = LinkOptions::parse(&body);
        let _ = LinkPatch::parse(&body);
        let _ = LinkInfo::parse(&body);
        let _ = LinkStats::parse(&body);
    }

    #[test]
    fn a_tlv_list_cut_short_is_refused_never_misread(o in options(), cut in any::<prop::sample::Index>()) {
        let bytes = o.view().to_vec().unwrap();
        let cut = cut.index(bytes.len());
        // The URL is written last, so every strict prefix lacks or cuts it.
        prop_assert!(LinkOptions::parse(&bytes[..cut]).is_err());
    }
}
