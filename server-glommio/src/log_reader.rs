//! URL reads from log segments through glommio's buffered file reads
//! (io_uring, through the page cache), with each core's open handles kept
//! in a bounded cache.

use std::io;

use bytes::Bytes;
use glommio::io::BufferedFile;
use shorty_runtime::driver::{FileCache, SegmentReader};
use shorty_service::log::segments::SegmentRef;

pub(crate) struct Reader(FileCache<BufferedFile>);

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
                let file = BufferedFile::open(&segment.path)
                    .await
                    .map_err(io::Error::from)?;
                // An evicted handle closes when its last read is done.
                self.0.insert(segment.idx, file)
            }
        };
        let read = file.read_at(offset, len).await.map_err(io::Error::from)?;
        Ok(Bytes::copy_from_slice(&read))
    }
}
