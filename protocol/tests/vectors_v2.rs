//! The version-2 test vectors of `PROTOCOL.md` (section 6), read from the
//! document itself, in both directions; and the version-1 view of them.

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::link::{
    Bucket, Granularity, LinkInfo, LinkOptions, LinkPatch, LinkStats, Referrer, StatsQuery,
};
use shorty_protocol::{
    Error, ErrorCode, Reply, Request, ServerInfo, TlvProblem, PROTOCOL_V1, PROTOCOL_V2,
};

const SPEC: &str = include_str!("../PROTOCOL.md");
const URL: &str = "https://example.com/";
const EXP: u64 = 1_798_761_600_000;
const CREATED: u64 = 1_764_547_200_000;
const HOUR: u64 = 3_600_000;

fn block(kind: &str) -> Vec<(String, String, Vec<u8>)> {
    let fence = format!("```{kind}\n");
    let start = SPEC.find(&fence).expect("block in PROTOCOL.md") + fence.len();
    let len = SPEC[start..].find("```").expect("closing fence");
    SPEC[start..start + len]
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let dir = words.next().expect("direction").to_owned();
            let name = words.next().expect("name").to_owned();
            let hex: String = words.collect();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (dir, name, bytes)
        })
        .collect()
}

fn one_payload(bytes: &[u8]) -> Result<Bytes, Error> {
    let mut buf = BytesMut::from(bytes);
    match FrameDecoder::new().decode(&mut buf)? {
        Status::Complete(payload) => {
            assert!(buf.is_empty(), "vector holds exactly one frame");
            Ok(payload)
        }
        Status::Partial { needed } => panic!("vector is incomplete, needs {needed} more"),
    }
}

fn expected_request(name: &str) -> Request<Vec<u8>> {
    let mut options = LinkOptions::new(URL);
    let mut patch = LinkPatch::default();
    match name {
        "hello-v2" => Request::hello(PROTOCOL_V2),
        "shorten2-plain" => Request::Shorten2(options.to_vec().unwrap()),
        "shorten2-options" => {
            options.alias = Some("docs");
            options.expires_at_ms = Some(EXP);
            options.max_clicks = Some(100);
            options.redirect_status = Some(301);
            options.expired_url = Some("https://example.com/gone");
            options.title = Some("Docs");
            options.forward_query = Some(false);
            Request::Shorten2(options.to_vec().unwrap())
        }
        "update-url-clear-expiry" => {
            patch.url = Some("https://example.org/");
            patch.expires_at_ms = Some(None);
            Request::update(b"docs".to_vec(), patch.to_vec().unwrap())
        }
        "update-disable" => {
            patch.disabled = Some(true);
            Request::update(b"867nvAB".to_vec(), patch.to_vec().unwrap())
        }
        "delete" => Request::Delete(b"867nvAB".to_vec()),
        "info" => Request::Info(b"docs".to_vec()),
        "auth" => Request::Auth(b"sk_test_123".to_vec()),
        "stats-hourly" => Request::stats(
            b"docs".to_vec(),
            StatsQuery::new(CREATED, CREATED + 2 * HOUR, Granularity::Hour),
        ),
        other => panic!("request vector {other} has no expectation in this test"),
    }
}

fn expected_reply(name: &str) -> Reply<Vec<u8>> {
    let error =
        |code: u16, message: &str| Reply::error(ErrorCode(code), message.as_bytes().to_vec());
    match name {
        "hello-v2" => Reply::Hello(ServerInfo::new(2, 65_536, 8_192)),
        "shortened2" => {
            let mut link = LinkInfo::new("docs", URL);
            link.expires_at_ms = Some(EXP);
            link.max_clicks = Some(100);
            link.created_at_ms = Some(CREATED);
            link.short_url = Some("http://127.0.0.1:5000/docs");
            Reply::Shortened2(link.to_vec().unwrap())
        }
        "updated-disabled" => {
            let mut link = LinkInfo::new("867nvAB", URL);
            link.disabled = true;
            Reply::Updated(link.to_vec().unwrap())
        }
        "deleted" => Reply::Deleted,
        "info" => {
            let mut link = LinkInfo::new("docs", URL);
            link.redirect_status = Some(308);
            link.title = Some("Docs");
            link.created_at_ms = Some(CREATED);
            link.clicks_total = Some(5);
            link.clicks_human = Some(4);
            link.clicks_bot = Some(1);
            link.last_click_at_ms = Some(CREATED + HOUR);
            Reply::Info(link.to_vec().unwrap())
        }
        "authed" => Reply::Authed,
        "stats" => {
            let mut stats = LinkStats::default();
            stats.total = 5;
            stats.human = 4;
            stats.bot = 1;
            stats.last_click_at_ms = Some(CREATED + HOUR + 60_000);
            stats.first_click_at_ms = Some(CREATED + 60_000);
            stats.series = vec![
                Bucket {
                    start_ms: CREATED,
                    count: 2,
                },
                Bucket {
                    start_ms: CREATED + HOUR,
                    count: 3,
                },
            ];
            stats.referrers = vec![Referrer {
                host: "example.org",
                count: 3,
            }];
            stats.granularity = Some(Granularity::Hour);
            Reply::Stats(stats.to_vec().unwrap())
        }
        "error-410" => error(410, "expired"),
        "error-409" => error(409, "alias taken"),
        "error-401" => error(401, "bad key"),
        "error-429" => error(429, "slow down"),
        "error-403" => error(403, "not yours"),
        other => panic!("reply vector {other} has no expectation in this test"),
    }
}

/// The variants are `#[non_exhaustive]`: matched, not built.
fn is_tlv(err: &Error, want_tag: u8, want: TlvProblem) -> bool {
    matches!(err, Error::InvalidTlv { tag, problem, .. } if *tag == want_tag && *problem == want)
}

#[test]
fn every_v2_vector_decodes_to_its_message_and_reencodes_identically() {
    let vectors = block("vectors-v2");
    assert_eq!(vectors.len(), 21, "PROTOCOL.md lists 21 version-2 vectors");
    for (dir, name, bytes) in vectors {
        let payload = one_payload(&bytes).unwrap();
        let mut out = Vec::new();
        match dir.as_str() {
            "request" => {
                let expected = expected_request(&name);
                let decoded = Request::decode_payload_for(PROTOCOL_V2, payload.clone()).unwrap();
                assert_eq!(decoded.as_borrowed(), expected.as_borrowed(), "{name}");
                expected.encode_frame(&mut out).unwrap();
                assert_eq!(out.len(), expected.frame_len(), "{name}");
                // A connection that negotiated only version 1 gets UNKNOWN_OPCODE.
                if expected.min_version() == PROTOCOL_V2 {
                    let v1 = Request::decode_payload_for(PROTOCOL_V1, payload.clone()).unwrap_err();
                    assert_eq!(v1, Error::UnknownOpcode(payload[0]), "{name}");
                    assert_eq!(v1.error_code(), ErrorCode::UNKNOWN_OPCODE);
                    assert_eq!(Request::decode_payload(payload).unwrap_err(), v1, "{name}");
                }
            }
            "reply" => {
                let expected = expected_reply(&name);
                let decoded = Reply::decode_payload_for(PROTOCOL_V2, payload.clone()).unwrap();
                assert_eq!(decoded.as_borrowed(), expected.as_borrowed(), "{name}");
                expected.encode_frame(&mut out).unwrap();
                assert_eq!(out.len(), expected.frame_len(), "{name}");
                // A version-1 reader keeps the new replies as unknown ones.
                if (0x15..=0x1a).contains(&payload[0]) {
                    let v1 = Reply::decode_payload(payload.clone()).unwrap();
                    assert!(
                        matches!(v1, Reply::Unknown { opcode, .. } if opcode == payload[0]),
                        "{name}"
                    );
                }
            }
            other => panic!("unknown direction {other}"),
        }
        assert_eq!(out, bytes, "{dir} {name} re-encodes to the vector");
    }
}

#[test]
fn v2_vectors_read_back_as_their_typed_fields() {
    let payload = |reply: bool, name: &str| {
        let (_, _, bytes) = block("vectors-v2")
            .into_iter()
            .find(|(d, n, _)| n == name && (d == "reply") == reply)
            .unwrap();
        one_payload(&bytes).unwrap()
    };
    let request =
        Request::decode_payload_for(PROTOCOL_V2, payload(false, "shorten2-options")).unwrap();
    let Request::Shorten2(body) = &request else {
        panic!("{request:?}")
    };
    let options = LinkOptions::parse(body).unwrap();
    assert_eq!(
        (options.url, options.alias, options.max_clicks),
        (URL, Some("docs"), Some(100))
    );

    let reply = Reply::decode_payload_for(PROTOCOL_V2, payload(true, "info")).unwrap();
    let link = reply.link().unwrap().unwrap();
    assert_eq!(
        (link.code, link.clicks_total, link.redirect_status),
        ("docs", Some(5), Some(308))
    );
    assert!(!link.disabled);

    let reply = Reply::decode_payload_for(PROTOCOL_V2, payload(true, "stats")).unwrap();
    let stats = LinkStats::parse(reply.body().unwrap()).unwrap();
    assert_eq!(stats.series.iter().map(|b| b.count).sum::<u64>(), 5);
    assert_eq!(stats.referrers[0].host, "example.org");
}

#[test]
fn every_invalid_v2_vector_is_refused_with_its_documented_error() {
    let vectors = block("invalid-v2");
    assert_eq!(vectors.len(), 15);
    for (dir, name, bytes) in vectors {
        let payload = one_payload(&bytes).unwrap();
        let result = match dir.as_str() {
            "request" => Request::decode_payload_for(PROTOCOL_V2, payload).map(drop),
            _ => Reply::decode_payload_for(PROTOCOL_V2, payload).map(drop),
        };
        let err = result.expect_err(&name);
        let as_documented = match name.as_str() {
            "shorten2-no-url" => is_tlv(&err, 12, TlvProblem::Missing),
            "shorten2-overrun" => is_tlv(&err, 12, TlvProblem::Truncated),
            "shorten2-unknown-tag" => is_tlv(&err, 0x30, TlvProblem::UnknownTag),
            "shorten2-duplicate" => is_tlv(&err, 12, TlvProblem::Duplicate),
            "shorten2-bad-alias" => is_tlv(&err, 10, TlvProblem::BadValue),
            "shorten2-bad-status" => is_tlv(&err, 3, TlvProblem::BadValue),
            "shorten2-disabled" => is_tlv(&err, 5, TlvProblem::NotAllowed),
            "update-truncated" => matches!(err, Error::Truncated { opcode: 0x06, .. }),
            "update-clear-url" => is_tlv(&err, 12, TlvProblem::BadValue),
            "delete-bad-code" => {
                matches!(
                    err,
                    Error::InvalidField {
                        opcode: 0x07,
                        field: "code",
                        ..
                    }
                )
            }
            "auth-empty" => matches!(
                err,
                Error::InvalidField {
                    opcode: 0x09,
                    field: "key",
                    ..
                }
            ),
            "stats-granularity" => {
                matches!(
                    err,
                    Error::InvalidField {
                        opcode: 0x0a,
                        field: "granularity",
                        ..
                    }
                )
            }
            "stats-truncated" => matches!(err, Error::Truncated { opcode: 0x0a, .. }),
            "deleted-trailing" => {
                matches!(
                    err,
                    Error::TrailingData {
                        opcode: 0x17,
                        extra: 1,
                        ..
                    }
                )
            }
            "info-no-code" => is_tlv(&err, 17, TlvProblem::Missing),
            other => panic!("invalid vector {other} has no expectation in this test"),
        };
        assert!(as_documented, "{dir} {name}: {err:?}");
        // Every one is a malformed request to a server: ERROR 400.
        assert_eq!(err.error_code(), ErrorCode::MALFORMED, "{name}");
    }
}

#[test]
fn skippable_tags_are_skipped_and_unknown_critical_ones_refused() {
    // Tag 0x80 (bit 7 set), then the URL: an older reader skips the first.
    let mut list = vec![0x80, 2, 0, 0xaa, 0xbb];
    list.extend_from_slice(&LinkOptions::new(URL).to_vec().unwrap());
    assert_eq!(LinkOptions::parse(&list).unwrap(), LinkOptions::new(URL));
    list[0] = 0x7f;
    let err = LinkOptions::parse(&list).unwrap_err();
    assert!(is_tlv(&err, 0x7f, TlvProblem::UnknownTag), "{err:?}");
}

#[test]
fn new_error_codes_are_named_and_documented() {
    for (code, name) in [
        (ErrorCode::UNAUTHORIZED, "UNAUTHORIZED"),
        (ErrorCode::FORBIDDEN, "FORBIDDEN"),
        (ErrorCode::CONFLICT, "CONFLICT"),
        (ErrorCode::GONE, "GONE"),
        (ErrorCode::RATE_LIMITED, "RATE_LIMITED"),
    ] {
        assert_eq!(code.name(), Some(name));
        assert!(
            SPEC.contains(&format!("| {}  | {name}", code.0)),
            "{code} documented"
        );
    }
    // Version 1's ALREADY_SHORT is the same code, the same bytes.
    assert_eq!(ErrorCode::ALREADY_SHORT, ErrorCode::CONFLICT);
}

#[test]
fn an_auth_request_never_prints_its_key() {
    let auth = Request::Auth(&b"sk_live_secret"[..]);
    assert_eq!(format!("{auth:?}"), "Auth(<redacted>)");
    // Other requests print as a derived Debug would.
    assert_eq!(
        format!("{:?}", Request::Resolve(&b"ab"[..])),
        "Resolve([97, 98])"
    );
    assert_eq!(
        format!("{:?}", Request::<&[u8]>::hello(2)),
        "Hello { version: 2 }"
    );
}
