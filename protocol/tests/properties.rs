//! Property tests: round trips, chunking independence, and robustness against
//! arbitrary bytes.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use shorty_protocol::frame::{parse_frame, FrameDecoder, Status, HEADER_LEN};
use shorty_protocol::{Error, ErrorCode, Reply, Request, ServerInfo};

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..200)
}

/// Valid bare URLs in requests: non-empty, first byte not a control byte.
fn bare() -> impl Strategy<Value = Vec<u8>> {
    (0x20u8..=0xff, body()).prop_map(|(first, mut rest)| {
        rest.insert(0, first);
        rest
    })
}

/// URL bodies a reply may hold: no control byte anywhere.
fn reply_url() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0x20u8..=0xff, 0..200)
}

fn request() -> impl Strategy<Value = Request<Vec<u8>>> {
    prop_oneof![
        bare().prop_map(Request::Bare),
        any::<u8>().prop_map(Request::hello),
        body().prop_map(Request::Ping),
        body().prop_map(Request::Shorten),
        body().prop_map(Request::Resolve),
    ]
}

fn reply() -> impl Strategy<Value = Reply<Vec<u8>>> {
    prop_oneof![
        (0x20u8..=0xff, reply_url()).prop_map(|(first, mut rest)| {
            rest.insert(0, first);
            Reply::Bare(rest)
        }),
        any::<(u8, u32, u32)>().prop_map(|(version, max_frame_len, max_url_len)| {
            Reply::Hello(ServerInfo::new(version, max_frame_len, max_url_len))
        }),
        body().prop_map(Reply::Pong),
        reply_url().prop_map(Reply::Shortened),
        reply_url().prop_map(Reply::Resolved),
        (400u16..600, ".{0,40}")
            .prop_map(|(code, message)| { Reply::error(ErrorCode(code), message.into_bytes()) }),
        // Opcodes no reply of this version uses: kept as unknown replies.
        (
            prop::sample::select(vec![0x00u8, 0x05, 0x10, 0x15, 0x1e]),
            body()
        )
            .prop_map(|(opcode, body)| {
                let mut payload = vec![opcode];
                payload.extend_from_slice(&body);
                Reply::decode_payload(payload.into())
                    .unwrap()
                    .map(|b| b.to_vec())
            }),
    ]
}

/// Splits `bytes` at the given cut points (taken modulo its length).
fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts {
        out.push(bytes[start..cut].to_vec());
        start = cut;
    }
    out
}

/// Feeds `chunks` one at a time to a decoder, collecting payloads.
fn decode_chunked(decoder: &FrameDecoder, chunks: &[Vec<u8>]) -> Result<Vec<Bytes>, Error> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Status::Complete(payload) = decoder.decode(&mut buf)? {
            out.push(payload);
        }
    }
    Ok(out)
}

proptest! {
    #[test]
    fn request_round_trips(req in request()) {
        let mut wire = BytesMut::new();
        req.encode_frame(&mut wire).unwrap();
        prop_assert_eq!(wire.len(), req.frame_len());
        let payload = match FrameDecoder::new().decode(&mut wire).unwrap() {
            Status::Complete(p) => p,
            partial => panic!("{partial:?}"),
        };
        prop_assert!(wire.is_empty());
        let decoded = Request::decode_payload(payload).unwrap();
        prop_assert_eq!(decoded.as_borrowed(), req.as_borrowed());
    }

    #[test]
    fn reply_round_trips(rep in reply()) {
        let mut wire = Vec::new();
        rep.encode_frame(&mut wire).unwrap();
        prop_assert_eq!(wire.len(), rep.frame_len());
        let Status::Complete(frame) = parse_frame(&wire, usize::MAX).unwrap() else {
            panic!("complete frame expected");
        };
        prop_assert_eq!(frame.encoded_len(), wire.len());
        prop_assert_eq!(Reply::parse_payload(frame.payload()).unwrap(), rep.as_borrowed());
    }

    /// Any way of cutting a stream of frames into reads yields the same
    /// messages, in the same order, as the whole stream at once.
    #[test]
    fn any_chunking_decodes_like_the_whole(
        reqs in prop::collection::vec(request(), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut wire = Vec::new();
        for req in &reqs {
            req.encode_frame(&mut wire).unwrap();
        }
        let decoder = FrameDecoder::new();
        let whole = decode_chunked(&decoder, &[wire.clone()]).unwrap();
        let chunked = decode_chunked(&decoder, &chunks(&wire, &cuts)).unwrap();
        prop_assert_eq!(&whole, &chunked);
        prop_assert_eq!(whole.len(), reqs.len());
        for (payload, req) in chunked.into_iter().zip(&reqs) {
            let decoded = Request::decode_payload(payload).unwrap();
            prop_assert_eq!(decoded.as_borrowed(), req.as_borrowed());
        }
    }

    /// Arbitrary bytes never panic, and the decoder never asks the caller to
    /// buffer more than one maximum frame.
    #[test]
    fn arbitrary_bytes_are_bounded_and_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
        max in 0usize..300,
    ) {
        let decoder = FrameDecoder::with_max_frame_len(max);
        let mut buf = BytesMut::new();
        let (mut consumed, mut fed) = (0, 0);
        'feed: for chunk in chunks(&bytes, &cuts) {
            buf.extend_from_slice(&chunk);
            fed += chunk.len();
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Status::Complete(payload)) => {
                        prop_assert!(payload.len() <= max);
                        consumed += before - buf.len();
                        let _ = Request::decode_payload(payload.clone());
                        let _ = Reply::decode_payload(payload);
                    }
                    Ok(Status::Partial { needed }) => {
                        prop_assert!(needed >= 1);
                        prop_assert!(buf.len() + needed <= HEADER_LEN + max);
                        break;
                    }
                    Err(Error::FrameTooLarge { len, max: m, .. }) => {
                        prop_assert!(len > m);
                        prop_assert_eq!(buf.len(), before, "nothing consumed on error");
                        break 'feed;
                    }
                    Err(other) => panic!("framing only fails on size: {other}"),
                }
            }
        }
        // Consumed + still buffered = everything fed, and what is still
        // buffered is exactly the unconsumed suffix.
        prop_assert_eq!(consumed + buf.len(), fed);
        prop_assert_eq!(&bytes[consumed..fed], &buf[..]);
    }

    /// An oversized length is refused from the header alone, whatever follows.
    #[test]
    fn oversized_header_is_refused_before_its_payload(
        max in 0usize..10_000,
        excess in 1u32..1_000_000,
        tail in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let len = max as u32 + excess;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&tail);
        let capacity_before = buf.capacity();
        let err = FrameDecoder::with_max_frame_len(max).decode(&mut buf).unwrap_err();
        prop_assert!(
            matches!(err, Error::FrameTooLarge { len: l, max: m, .. } if l == len as usize && m == max),
            "{err:?}"
        );
        prop_assert_eq!(buf.capacity(), capacity_before, "nothing reserved");
    }

    #[test]
    fn typed_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        // Whatever the verdict, parsing is total, and anything accepted
        // re-encodes to the very same payload.
        if let Ok(req) = Request::parse_payload(&bytes) {
            let mut out = Vec::new();
            req.encode_frame(&mut out).unwrap();
            prop_assert_eq!(&out[HEADER_LEN..], &bytes[..]);
        }
        if let Ok(rep) = Reply::parse_payload(&bytes) {
            let mut out = Vec::new();
            rep.encode_frame(&mut out).unwrap();
            prop_assert_eq!(&out[HEADER_LEN..], &bytes[..]);
        }
    }
}

proptest! {
    /// Batch decoding yields exactly what frame-by-frame decoding yields,
    /// under any chunking, and leaves the same bytes behind.
    #[test]
    fn decode_all_matches_decode(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
        max in 0usize..300,
    ) {
        let decoder = FrameDecoder::with_max_frame_len(max);
        let (mut one, mut all) = (BytesMut::new(), BytesMut::new());
        let (mut by_one, mut by_all) = (Vec::new(), Vec::new());
        let (mut err_one, mut err_all) = (None, None);
        for chunk in chunks(&bytes, &cuts) {
            one.extend_from_slice(&chunk);
            all.extend_from_slice(&chunk);
            while err_one.is_none() {
                match decoder.decode(&mut one) {
                    Ok(Status::Complete(p)) => by_one.push(p),
                    Ok(Status::Partial { .. }) => break,
                    Err(e) => err_one = Some(e),
                }
            }
            while err_all.is_none() {
                match decoder.decode_all(&mut all) {
                    Ok(frames) if frames.is_empty() => break,
                    Ok(frames) => {
                        let len: usize = frames.iter().map(|p| p.len() + HEADER_LEN).sum();
                        prop_assert_eq!(len, frames.encoded_len());
                        by_all.extend(frames.payloads());
                    }
                    Err(e) => err_all = Some(e),
                }
            }
        }
        prop_assert_eq!(by_one, by_all);
        prop_assert_eq!(err_one, err_all);
        prop_assert_eq!(one, all);
    }
}
