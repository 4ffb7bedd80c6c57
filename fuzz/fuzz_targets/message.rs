//! Structure-aware: arbitrary typed messages, of version 1 and 2, and
//! arbitrary typed link views (the TLV lists of version 2). Whatever encodes
//! must decode back to the same message; whatever the encoder refuses is
//! exactly what would not read back as itself, and the decoder refuses the
//! same bytes.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use shorty_protocol::frame::{parse_frame, Status};
use shorty_protocol::link::{LinkInfo, LinkOptions, LinkPatch, LinkStats};
use shorty_protocol::{Error, Reply, Request, PROTOCOL_V1, PROTOCOL_V2};

fn payload(wire: &[u8]) -> &[u8] {
    match parse_frame(wire, usize::MAX) {
        Ok(Status::Complete(frame)) => {
            assert_eq!(frame.encoded_len(), wire.len());
            frame.payload()
        }
        other => panic!("an encoded message is one complete frame: {other:?}"),
    }
}

/// The payload a version-2 request would have, written without the
/// encoder's checks (`None` for a code too long for UPDATE's length byte).
fn unchecked_v2_request(req: &Request<Vec<u8>>) -> Option<Vec<u8>> {
    let (op, parts): (u8, Vec<&[u8]>) = match req {
        Request::Shorten2(b) => (0x05, vec![b]),
        Request::Update { code, patch, .. } => {
            let len = u8::try_from(code.len()).ok()?;
            let mut out = vec![0x06, len];
            out.extend_from_slice(code);
            out.extend_from_slice(patch);
            return Some(out);
        }
        Request::Delete(b) => (0x07, vec![b]),
        Request::Info(b) => (0x08, vec![b]),
        Request::Auth(b) => (0x09, vec![b]),
        Request::Stats { code, query, .. } => {
            let mut out = vec![0x0a];
            out.extend_from_slice(&query.from_ms.to_le_bytes());
            out.extend_from_slice(&query.to_ms.to_le_bytes());
            out.push(query.granularity.to_u8());
            out.extend_from_slice(code);
            return Some(out);
        }
        other => panic!("not a version-2 request: {other:?}"),
    };
    let mut out = vec![op];
    for part in parts {
        out.extend_from_slice(part);
    }
    Some(out)
}

fn check_request(req: &Request<Vec<u8>>) {
    let mut wire = Vec::new();
    match req.encode_frame(&mut wire) {
        Ok(()) => {
            assert_eq!(wire.len(), req.frame_len());
            let payload = payload(&wire);
            let version = req.min_version();
            assert_eq!(
                Request::parse_payload_for(version, payload),
                Ok(req.as_borrowed())
            );
            assert_eq!(
                Request::parse_payload_for(PROTOCOL_V2, payload),
                Ok(req.as_borrowed())
            );
            if version == PROTOCOL_V2 {
                // A version-1 connection refuses every version-2 request.
                assert_eq!(
                    Request::parse_payload_for(PROTOCOL_V1, payload),
                    Err(Error::UnknownOpcode(payload[0]))
                );
            }
        }
        Err(Error::InvalidBareUrl) => {
            let Request::Bare(url) = req else {
                panic!("only bare URLs are refused")
            };
            assert!(url.first().is_none_or(|&b| b <= 0x1f));
            assert!(wire.is_empty());
        }
        Err(Error::InvalidTlv { .. } | Error::InvalidField { .. }) => {
            assert_eq!(req.min_version(), PROTOCOL_V2, "{req:?}");
            assert!(wire.is_empty());
            if let Some(bytes) = unchecked_v2_request(req) {
                assert!(Request::parse_payload_for(PROTOCOL_V2, &bytes).is_err());
            }
        }
        Err(other) => panic!("unexpected encode error {other}"),
    }
}

fn check_reply(rep: &Reply<Vec<u8>>) {
    let v2_opcode = match rep {
        Reply::Shortened2(_) => Some(0x15),
        Reply::Updated(_) => Some(0x16),
        Reply::Info(_) => Some(0x18),
        Reply::Stats(_) => Some(0x1a),
        _ => None,
    };
    let v2 = v2_opcode.is_some() || matches!(rep, Reply::Deleted | Reply::Authed);
    let mut wire = Vec::new();
    match rep.encode_frame(&mut wire) {
        Ok(()) => {
            assert_eq!(wire.len(), rep.frame_len());
            let version = if v2 { PROTOCOL_V2 } else { PROTOCOL_V1 };
            assert_eq!(
                Reply::parse_payload_for(version, payload(&wire)),
                Ok(rep.as_borrowed())
            );
        }
        Err(Error::InvalidBareUrl) => {
            let Reply::Bare(url) = rep else {
                panic!("only bare URLs are refused as bare")
            };
            assert!(url.is_empty() || url.iter().any(|&b| b <= 0x1f));
        }
        Err(Error::ControlByteInUrl { at, .. }) => {
            let (Reply::Shortened(url) | Reply::Resolved(url)) = rep else {
                panic!("only reply URLs hold no control byte")
            };
            assert!(url[at] <= 0x1f && url[..at].iter().all(|&b| b > 0x1f));
        }
        Err(Error::InvalidErrorCode { code, .. }) => {
            assert!(matches!(rep, Reply::Error { code: c, .. } if c.0 == code));
            assert!(!(400..600).contains(&code));
        }
        Err(Error::InvalidUtf8) => {
            let Reply::Error { message, .. } = rep else {
                panic!("only error text is UTF-8")
            };
            assert!(std::str::from_utf8(message).is_err());
        }
        Err(Error::InvalidOpcode { opcode, .. }) => {
            // An unknown reply whose opcode would read back as another one.
            assert!(matches!(rep, Reply::Unknown { opcode: o, .. } if *o == opcode));
            let known = [0x11, 0x12, 0x13, 0x14, 0x1f];
            assert!(opcode > 0x1f || known.contains(&opcode));
        }
        Err(Error::InvalidTlv { .. }) => {
            let op = v2_opcode.expect("only version-2 lists are TLVs");
            let mut bytes = vec![op];
            bytes.extend_from_slice(rep.body().unwrap_or_default());
            assert!(Reply::parse_payload_for(PROTOCOL_V2, &bytes).is_err());
        }
        Err(other) => panic!("unexpected encode error {other}"),
    }
}

/// A typed view encodes to a list that reads back as itself, or is refused
/// with a TLV error.
macro_rules! check_view {
    ($u:expr, $ty:ident, $wrap:expr) => {
        if let Ok(view) = $ty::arbitrary($u) {
            match view.to_vec() {
                Ok(bytes) => {
                    assert_eq!(bytes.len(), view.encoded_len());
                    assert_eq!($ty::parse(&bytes).as_ref(), Ok(&view));
                    $wrap(bytes);
                }
                Err(Error::InvalidTlv { .. }) => {}
                Err(other) => panic!("unexpected encode error {other}"),
            }
        }
    };
}

fuzz_target!(|msgs: (Request<Vec<u8>>, Reply<Vec<u8>>, Vec<u8>)| {
    let (req, rep, views) = msgs;
    check_request(&req);
    check_reply(&rep);

    let u = &mut Unstructured::new(&views);
    check_view!(u, LinkOptions, |b| check_request(&Request::Shorten2(b)));
    check_view!(u, LinkPatch, |b| check_request(&Request::update(
        b"docs".to_vec(),
        b
    )));
    check_view!(u, LinkInfo, |b| check_reply(&Reply::Info(b)));
    check_view!(u, LinkStats, |b| check_reply(&Reply::Stats(b)));
});
