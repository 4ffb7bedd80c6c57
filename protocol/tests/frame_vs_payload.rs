//! The frame/payload trap (issue 25): a whole frame (header included) read
//! where a payload is expected must never pass for the reply it holds.
//! Before, `Reply::parse` took a whole 31-byte SHORTENED frame for an ERROR
//! reply with code 0, and a longer one for a bare URL starting `"\0\0\0`.

use shorty_protocol::frame::HEADER_LEN;
use shorty_protocol::{Error, ErrorCode, Reply, ReplyError, Request, ServerInfo};

/// Body lengths to try: every low byte of the header (the byte read as an
/// opcode) and then some. `SHORTY_TRAP_MAX` raises the bound.
fn lengths() -> std::ops::Range<usize> {
    let max = std::env::var("SHORTY_TRAP_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    0..max
}

/// A reply and the request it answers.
type Exchange = (Reply<Vec<u8>>, Request<&'static [u8]>);

/// A reply of each kind with a body of `len` bytes, and the request it
/// answers.
fn replies(len: usize) -> Vec<Exchange> {
    let url = {
        let mut url = b"http://127.0.0.1:5000/".to_vec();
        url.resize(len.max(url.len()), b'a');
        url
    };
    let message = "m".repeat(len);
    vec![
        (Reply::Bare(url.clone()), Request::Bare(b"https://e.com/")),
        (
            Reply::Shortened(url.clone()),
            Request::Shorten(b"https://e.com/"),
        ),
        (Reply::Resolved(url), Request::Resolve(b"867nv")),
        (
            Reply::error(ErrorCode::NOT_FOUND, message.into_bytes()),
            Request::Resolve(b"867nv"),
        ),
        (Reply::Pong(vec![b'p'; len]), Request::Ping(b"")),
        (
            Reply::Hello(ServerInfo::new(1, 65_536, 8_192)),
            Request::hello(1),
        ),
    ]
}

#[test]
fn a_whole_frame_read_as_a_payload_never_passes_for_its_reply() {
    for len in lengths() {
        for (reply, request) in replies(len) {
            let mut frame = Vec::new();
            reply.encode_frame(&mut frame).unwrap();
            // The right level: the payload a frame decoder hands out.
            let payload = Reply::parse_payload(&frame[HEADER_LEN..]).unwrap();
            assert_eq!(payload, reply.as_borrowed());
            assert!(payload.answers(&request));

            // The wrong level: refused, or at least not an answer.
            let misread = Reply::parse_payload(&frame);
            let pong_gap = matches!(reply, Reply::Pong(_)) && frame[0] == 0x12;
            if pong_gap {
                // The one documented gap: "\x12\0\0\0..." is a valid PONG.
                continue;
            }
            match misread {
                Err(_) => {}
                // (An ERROR reply answers anything, but a misread one would
                // need a code of 400-599 in the header's bytes 1-2: a frame
                // over 100 KiB.)
                Ok(misread) => {
                    assert!(
                        !misread.answers(&request),
                        "{} frame of {} bytes misread as {misread:?}",
                        reply.name(),
                        frame.len()
                    );
                }
            }
        }
    }
}

#[test]
fn the_reported_cases_are_clear_errors() -> Result<(), Error> {
    // The two cases of the issue: a SHORTENED frame with a 31-byte payload
    // and one with a 34-byte payload.
    let mut frame = Vec::new();
    Reply::Shortened("http://127.0.0.1:5000/867nv123").encode_frame(&mut frame)?;
    assert_eq!(frame.len(), HEADER_LEN + 31);
    let err = Reply::parse_payload(&frame).unwrap_err();
    assert!(
        matches!(err, Error::InvalidErrorCode { code: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("whole frame"), "{err}");

    frame.clear();
    Reply::Shortened("http://127.0.0.1:5000/867nv?a=b&c").encode_frame(&mut frame)?;
    assert_eq!(frame.len(), HEADER_LEN + 34);
    let err = Reply::parse_payload(&frame).unwrap_err();
    assert_eq!(err, Error::InvalidBareUrl);
    assert!(err.to_string().contains("whole frame"), "{err}");

    // And an unknown opcode (here the length byte 0x1c) is refused by
    // `into_result`, with a message that says so.
    frame.clear();
    Reply::Shortened("http://127.0.0.1:5000/867nv").encode_frame(&mut frame)?;
    let err = Reply::parse_payload(&frame)?.into_result().unwrap_err();
    assert!(matches!(
        err,
        ReplyError::Unexpected(Reply::Unknown { opcode: 0x1c, .. })
    ));
    assert_eq!(err.to_string(), "unexpected reply with unknown opcode 0x1c");
    Ok(())
}
