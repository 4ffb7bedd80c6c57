//! A SHORTEN is acknowledged only when its code resolves to its URL
//! (issue 18, defect 12): a new id whose code the key directory holds is
//! skipped, and when the code is taken while the record is being written
//! (nothing does that today; custom aliases made on another core will be
//! able to), the durable record is not an acknowledgement.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{ErrorCode, Reply, Request};
use shorty_service::codes::{CodeKey, Codec, IdSpace};
use shorty_service::connection::{Connection, Kind};
use shorty_service::keydir::{KeyDir, Location};
use shorty_service::log::segments::SegmentTable;
use shorty_service::settings::Settings;
use shorty_service::shard::{LocalStore, Shard, Shared, StoreMode};

#[test]
fn a_code_the_key_directory_already_holds_is_never_acknowledged() {
    let keydir = Arc::new(KeyDir::new());
    let codec = Codec::new(&CodeKey([7; 16]));
    let imported = Location {
        file: 0,
        offset: 16,
    };
    let store = LocalStore {
        keydir: keydir.clone(),
        segments: Arc::new(SegmentTable::new(std::path::Path::new("/data"), 1)),
        ids: Arc::new(IdSpace::new(0)),
    };
    let shared = Shared::new(
        Settings::for_tests("http://s.example/"),
        codec.clone(),
        StoreMode::Local(store),
        1,
    );
    let mut shard = Shard::new(Arc::new(shared), 0);
    let now = Instant::now();
    let mut conn = Connection::new(1, Kind::Framed, now);
    let mut wire = Vec::new();
    for url in [&b"https://e.com/first"[..], b"https://e.com/second"] {
        Request::Shorten(url).encode_frame(&mut wire).unwrap();
    }
    conn.handle_input(&mut shard, &wire, now);
    // While the two records are written, another link takes the code of
    // id 0 (the first SHORTEN's).
    assert!(keydir.insert(codec.key_of(0), imported));
    // The batch is durable.
    while let Some(io) = shard.poll_log_io(now) {
        shard.log_done(&io, shorty_service::log::IoResult::Ok, now);
    }
    let mut bytes = BytesMut::new();
    while let Some(chunk) = conn.poll_transmit(&mut shard, now) {
        bytes.extend_from_slice(&chunk);
        conn.transmitted();
    }
    let mut replies = Vec::new();
    while let Status::Complete(p) = FrameDecoder::with_max_frame_len(1 << 20)
        .decode(&mut bytes)
        .unwrap()
    {
        replies.push(Reply::decode_payload(p).unwrap());
    }
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies[0]
            .as_error()
            .is_some_and(|(code, _)| code == ErrorCode::INTERNAL),
        "the SHORTEN whose code is taken must fail, not be acknowledged: {:?}",
        replies[0]
    );
    assert!(
        matches!(replies[1], Reply::Shortened(_)),
        "the next one is fine: {:?}",
        replies[1]
    );
    // The code still resolves to the link that held it.
    assert_eq!(keydir.get(codec.key_of(0)), Some(imported));
}
