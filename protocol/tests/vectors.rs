//! The test vectors of `PROTOCOL.md`, read from the document itself so that
//! the specification and the code cannot drift apart.

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{Error, ErrorCode, Reply, Request, ServerInfo};

const SPEC: &str = include_str!("../PROTOCOL.md");
const URL: &[u8] = b"https://example.com/";
const SHORT: &[u8] = b"http://127.0.0.1:5000/867nv";

/// `(direction, name, bytes)` for each line of the fenced block `kind`.
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

fn expected_request(name: &str) -> Request<&'static [u8]> {
    match name {
        "bare-seed" => Request::Bare(URL),
        "hello-v1" => Request::hello(1),
        "ping-empty" => Request::Ping(b""),
        "ping-abc" => Request::Ping(b"abc"),
        "shorten" => Request::Shorten(URL),
        "resolve-867nv" => Request::Resolve(b"867nv"),
        other => panic!("request vector {other} has no expectation in this test"),
    }
}

fn expected_reply(name: &str) -> Reply<&'static [u8]> {
    match name {
        "bare-seed" => Reply::Bare(SHORT),
        "hello-v1" => Reply::Hello(ServerInfo::new(1, 65_536, 8_192)),
        "pong-abc" => Reply::Pong(b"abc"),
        "shortened" => Reply::Shortened(SHORT),
        "resolved" => Reply::Resolved(URL),
        "error-404" => Reply::error(ErrorCode::NOT_FOUND, b"unknown code"),
        "unknown-0x15" => match Reply::parse_payload(b"\x15abc").unwrap() {
            unknown @ Reply::Unknown { opcode: 0x15, .. } => unknown,
            other => panic!("an unknown reply opcode reads as Reply::Unknown, not {other:?}"),
        },
        other => panic!("reply vector {other} has no expectation in this test"),
    }
}

/// Splits exactly one frame off `bytes` with the streaming decoder.
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

#[test]
fn every_valid_vector_decodes_to_its_message_and_reencodes_identically() {
    let vectors = block("vectors");
    assert_eq!(vectors.len(), 13, "PROTOCOL.md lists 13 valid vectors");
    for (dir, name, bytes) in vectors {
        let payload = one_payload(&bytes).unwrap();
        let mut out = Vec::new();
        match dir.as_str() {
            "request" => {
                let expected = expected_request(&name);
                assert_eq!(
                    Request::decode_payload(payload).unwrap().as_borrowed(),
                    expected,
                    "{name}"
                );
                expected.encode_frame(&mut out).unwrap();
                assert_eq!(out.len(), expected.frame_len(), "{name}");
            }
            "reply" => {
                let expected = expected_reply(&name);
                assert_eq!(
                    Reply::decode_payload(payload).unwrap().as_borrowed(),
                    expected,
                    "{name}"
                );
                expected.encode_frame(&mut out).unwrap();
                assert_eq!(out.len(), expected.frame_len(), "{name}");
            }
            other => panic!("unknown direction {other}"),
        }
        assert_eq!(out, bytes, "{dir} {name} re-encodes to the vector");
    }
}

#[test]
fn every_invalid_vector_is_refused_with_its_documented_error() {
    let vectors = block("invalid");
    assert_eq!(vectors.len(), 10);
    for (dir, name, bytes) in vectors {
        let result = one_payload(&bytes).and_then(|payload| match dir.as_str() {
            "request" => Request::decode_payload(payload).map(drop),
            _ => Reply::decode_payload(payload).map(drop),
        });
        // The variants are `#[non_exhaustive]`: matched, not built.
        let refused_as_documented = match (dir.as_str(), name.as_str()) {
            ("request", "empty-payload") => matches!(result, Err(Error::EmptyPayload)),
            ("request", "unknown-opcode") => matches!(result, Err(Error::UnknownOpcode(0x09))),
            ("request", "hello-truncated") => {
                matches!(result, Err(Error::Truncated { opcode: 0x01, .. }))
            }
            ("request", "hello-trailing") => matches!(
                result,
                Err(Error::TrailingData {
                    opcode: 0x01,
                    extra: 1,
                    ..
                })
            ),
            ("request", "oversized-header") => matches!(
                result,
                Err(Error::FrameTooLarge { len, max, .. })
                    if len == u32::MAX as usize && max == shorty_protocol::frame::DEFAULT_MAX_FRAME_LEN
            ),
            ("reply", "error-bad-utf8") => matches!(result, Err(Error::InvalidUtf8)),
            ("reply", "hello-truncated") => {
                matches!(result, Err(Error::Truncated { opcode: 0x11, .. }))
            }
            ("reply", "error-code-0") => {
                matches!(result, Err(Error::InvalidErrorCode { code: 0, .. }))
            }
            ("reply", "shortened-nul") => matches!(
                result,
                Err(Error::ControlByteInUrl {
                    opcode: 0x13,
                    at: 0,
                    ..
                })
            ),
            ("reply", "bare-nul") => matches!(result, Err(Error::InvalidBareUrl)),
            other => panic!("invalid vector {other:?} has no expectation in this test"),
        };
        assert!(refused_as_documented, "{dir} {name}: {result:?}");
    }
}

#[test]
fn server_answers_documented_error_codes() {
    // The "server's answer" column of the invalid-vector table.
    assert_eq!(Error::EmptyPayload.error_code(), ErrorCode::MALFORMED);
    assert_eq!(Error::UnknownOpcode(9).error_code(), ErrorCode(501));
    let truncated = Request::parse_payload(b"\x01").unwrap_err();
    assert_eq!(truncated.error_code(), ErrorCode(400));
    let too_large = shorty_protocol::frame::parse_frame(b"\x09\x00\x00\x00", 1).unwrap_err();
    assert_eq!(too_large.error_code(), ErrorCode(413));
}

#[test]
fn every_error_code_in_the_table_is_known_by_name() {
    for code in [400u16, 404, 408, 409, 413, 422, 500, 501, 503, 505] {
        let code = ErrorCode(code);
        let name = code.name().expect("documented code has a name");
        assert!(
            SPEC.contains(&format!("| {}  | {name}", code.0)),
            "{code} documented"
        );
    }
    assert_eq!(ErrorCode(418).name(), None);
    assert!(ErrorCode(418).is_client_error() && !ErrorCode(418).is_server_error());
    assert_eq!(ErrorCode::OVERLOADED.to_string(), "503 OVERLOADED");
}

#[test]
fn encoders_refuse_what_decoders_would_misread() {
    let mut out = Vec::new();
    assert_eq!(
        Request::Bare(&b""[..]).encode_frame(&mut out),
        Err(Error::InvalidBareUrl)
    );
    assert_eq!(
        Request::Bare(&b"\x03x"[..]).encode_frame(&mut out),
        Err(Error::InvalidBareUrl)
    );
    assert_eq!(
        Reply::Bare(&b"\x1fx"[..]).encode_frame(&mut out),
        Err(Error::InvalidBareUrl)
    );
    let bad = Reply::error(ErrorCode::INTERNAL, &b"\xff"[..]);
    assert_eq!(bad.encode_frame(&mut out), Err(Error::InvalidUtf8));
    let bad = Reply::error(ErrorCode(200), &b"fine"[..]);
    assert!(matches!(
        bad.encode_frame(&mut out),
        Err(Error::InvalidErrorCode { code: 200, .. })
    ));
    let bad = Reply::Resolved(&b"https://e.com/\tx"[..]);
    assert!(matches!(
        bad.encode_frame(&mut out),
        Err(Error::ControlByteInUrl { at: 14, .. })
    ));
    // An unknown reply that would read back as a known one:
    let Reply::Unknown { .. } = Reply::parse_payload(b"\x15").unwrap() else {
        panic!("0x15 is not a reply opcode");
    };
    for known in [0x13u8, 0x1f, b'h'] {
        let mut reply = Reply::parse_payload(b"\x15").unwrap();
        if let Reply::Unknown { opcode, .. } = &mut reply {
            *opcode = known;
        }
        assert!(matches!(
            reply.encode_frame(&mut out),
            Err(Error::InvalidOpcode { opcode, .. }) if opcode == known
        ));
    }
    assert!(out.is_empty(), "nothing written on error");
}
