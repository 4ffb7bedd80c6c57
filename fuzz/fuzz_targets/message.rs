//! Structure-aware: arbitrary typed messages. Whatever encodes must decode
//! back to the same message; whatever the encoder refuses is exactly what
//! would not read back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shorty_protocol::frame::{parse_frame, Status};
use shorty_protocol::{Error, Reply, Request};

fn payload(wire: &[u8]) -> &[u8] {
    match parse_frame(wire, usize::MAX) {
        Ok(Status::Complete(frame)) => {
            assert_eq!(frame.encoded_len(), wire.len());
            frame.payload()
        }
        other => panic!("an encoded message is one complete frame: {other:?}"),
    }
}

fuzz_target!(|msgs: (Request<Vec<u8>>, Reply<Vec<u8>>)| {
    let (req, rep) = msgs;
    let mut wire = Vec::new();
    match req.encode_frame(&mut wire) {
        Ok(()) => {
            assert_eq!(wire.len(), req.frame_len());
            assert_eq!(
                Request::parse_payload(payload(&wire)),
                Ok(req.as_borrowed())
            );
        }
        Err(Error::InvalidBareUrl) => {
            let Request::Bare(url) = &req else {
                panic!("only bare URLs are refused")
            };
            assert!(url.first().is_none_or(|&b| b <= 0x1f));
            assert!(wire.is_empty());
        }
        Err(other) => panic!("unexpected encode error {other}"),
    }

    let mut wire = Vec::new();
    match rep.encode_frame(&mut wire) {
        Ok(()) => {
            assert_eq!(wire.len(), rep.frame_len());
            assert_eq!(Reply::parse_payload(payload(&wire)), Ok(rep.as_borrowed()));
        }
        Err(Error::InvalidBareUrl) => {
            let Reply::Bare(url) = &rep else {
                panic!("only bare URLs are refused as bare")
            };
            assert!(url.is_empty() || url.iter().any(|&b| b <= 0x1f));
        }
        Err(Error::ControlByteInUrl { at, .. }) => {
            let (Reply::Shortened(url) | Reply::Resolved(url)) = &rep else {
                panic!("only reply URLs hold no control byte")
            };
            assert!(url[at] <= 0x1f && url[..at].iter().all(|&b| b > 0x1f));
        }
        Err(Error::InvalidErrorCode { code, .. }) => {
            assert!(matches!(&rep, Reply::Error { code: c, .. } if c.0 == code));
            assert!(!(400..600).contains(&code));
        }
        Err(Error::InvalidUtf8) => {
            let Reply::Error { message, .. } = &rep else {
                panic!("only error text is UTF-8")
            };
            assert!(std::str::from_utf8(message).is_err());
        }
        Err(Error::InvalidOpcode { opcode, .. }) => {
            // An unknown reply whose opcode would read back as another one.
            assert!(matches!(&rep, Reply::Unknown { opcode: o, .. } if *o == opcode));
            let known = [0x11, 0x12, 0x13, 0x14, 0x1f];
            assert!(opcode > 0x1f || known.contains(&opcode));
        }
        Err(other) => panic!("unexpected encode error {other}"),
    }
});
