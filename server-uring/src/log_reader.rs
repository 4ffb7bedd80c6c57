//! URL reads from log segments through io_uring (`read_at`), with each
//! core's open handles kept in a bounded cache.

use std::io;

use bytes::Bytes;
use shorty_runtime::driver::{FileCache, SegmentReader};
use shorty_service::log::segments::SegmentRef;
use tokio_uring::fs::File;

pub(crate) struct Reader(FileCache<File>);

impl Reader {
    /// Keeps at most `handles` segment files open.
    pub(crate) fn new(handles: usize) -> Self {
        Self(FileCache::with_capacity(handles))
    }
}

impl SegmentReader for Reader {
    async fn read(&self, segment: SegmentRef, offset: u64, len: usize) -> io::Result<Bytes> {
        let file = match self.0.get(segment.idx) {
            Some(file) => file,
            None => {
                let file = File::open(&segment.path).await?;
                // An evicted handle closes when its last read is done.
                self.0.insert(segment.idx, file)
            }
        };
        let (result, mut buf) = file.read_at(vec![0u8; len], offset).await;
        let n = result?;
        buf.truncate(n);
        Ok(Bytes::from(buf))
    }
}
