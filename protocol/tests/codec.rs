//! The `tokio_util::codec` implementations, driven directly (no runtime).
#![cfg(feature = "tokio-codec")]

use bytes::{Bytes, BytesMut};
use shorty_protocol::codec::{ClientCodec, CodecError, FrameCodec, ServerCodec};
use shorty_protocol::{Error, ErrorCode, Reply, Request};
use tokio_util::codec::{Decoder, Encoder};

#[test]
fn client_and_server_codecs_talk_to_each_other_one_byte_at_a_time() {
    let (mut client, mut server) = (ClientCodec::new(), ServerCodec::new());
    let mut to_server = BytesMut::new();
    client
        .encode(Request::Shorten("https://a.example/x"), &mut to_server)
        .unwrap();
    client
        .encode(Request::Ping(&b""[..]), &mut to_server)
        .unwrap();

    let mut trickle = BytesMut::new();
    let mut requests = Vec::new();
    for byte in to_server {
        trickle.extend_from_slice(&[byte]);
        while let Some(req) = server.decode(&mut trickle).unwrap() {
            requests.push(req);
        }
    }
    assert_eq!(
        requests,
        [
            Request::Shorten(Bytes::from_static(b"https://a.example/x")),
            Request::Ping(Bytes::new())
        ]
    );

    let mut to_client = BytesMut::new();
    server
        .encode(Reply::Shortened("http://s/1"), &mut to_client)
        .unwrap();
    let err = Reply::error(ErrorCode::NOT_FOUND, "nope");
    server.encode(err, &mut to_client).unwrap();
    assert_eq!(
        client.decode(&mut to_client).unwrap(),
        Some(Reply::Shortened(Bytes::from_static(b"http://s/1")))
    );
    let reply = client.decode(&mut to_client).unwrap().unwrap();
    assert_eq!(reply.as_error(), Some((ErrorCode::NOT_FOUND, "nope")));
    assert_eq!(client.decode(&mut to_client).unwrap(), None);
}

#[test]
fn codecs_enforce_the_limit_in_both_directions() {
    let mut codec = FrameCodec::with_max_frame_len(8);
    let mut dst = BytesMut::new();
    let err = codec
        .encode(Bytes::from_static(b"123456789"), &mut dst)
        .unwrap_err();
    assert!(matches!(
        err,
        CodecError::Protocol(Error::FrameTooLarge { len: 9, max: 8, .. })
    ));
    assert!(dst.is_empty());

    let mut src = BytesMut::from(&b"\x09\x00\x00\x00"[..]);
    let err = codec.decode(&mut src).unwrap_err();
    assert!(matches!(
        err,
        CodecError::Protocol(Error::FrameTooLarge { len: 9, max: 8, .. })
    ));
    assert!(
        src.capacity() < 64,
        "no space reserved for the refused payload"
    );

    codec
        .encode(Bytes::from_static(b"12345678"), &mut dst)
        .unwrap();
    assert_eq!(
        codec.decode(&mut dst).unwrap(),
        Some(Bytes::from_static(b"12345678"))
    );
}

#[test]
fn a_malformed_message_is_a_protocol_error() {
    let mut server = ServerCodec::new();
    let mut src = BytesMut::from(&b"\x01\x00\x00\x00\x09"[..]);
    let err = server.decode(&mut src).unwrap_err();
    assert!(matches!(err, CodecError::Protocol(Error::UnknownOpcode(9))));
    assert!(err.to_string().contains("unknown opcode 0x09"));
}

/// An unknown reply opcode (a newer server) is a value, not the end of the
/// stream: the replies after it still decode, in order.
#[test]
fn an_unknown_reply_opcode_does_not_end_the_stream() {
    let mut client = ClientCodec::new();
    let mut src = BytesMut::from(&b"\x03\x00\x00\x00\x15ab\x02\x00\x00\x00\x12z"[..]);
    let unknown = client.decode(&mut src).unwrap().unwrap();
    assert!(
        matches!(&unknown, Reply::Unknown { opcode: 0x15, body, .. } if body == "ab"),
        "{unknown:?}"
    );
    assert!(matches!(
        unknown.clone().into_result(),
        Err(shorty_protocol::ReplyError::Unexpected(
            Reply::Unknown { .. }
        ))
    ));
    assert_eq!(
        client.decode(&mut src).unwrap(),
        Some(Reply::Pong(Bytes::from_static(b"z")))
    );
}

#[test]
fn a_client_codec_set_to_version_2_decodes_version_2_replies() {
    let mut codec = ClientCodec::new();
    assert_eq!(codec.version(), 1);
    let frame = b"\x01\x00\x00\x00\x17";
    let mut buf = BytesMut::from(&frame[..]);
    // Version 1: DELETED's opcode is not one version 1 assigns.
    let reply = codec.decode(&mut buf).unwrap().unwrap();
    assert!(matches!(reply, Reply::Unknown { opcode: 0x17, .. }));
    codec.set_version(2);
    let mut buf = BytesMut::from(&frame[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Reply::Deleted));
}
