//! Log segment writes through glommio's `DmaFile` (O_DIRECT, on io_uring).
//!
//! O_DIRECT writes whole blocks, so a batch that ends mid-block is padded
//! to the block's end, and the next batch rewrites that last block with
//! its old bytes followed by new ones. Three rules keep that safe
//! (issue 18, defect 19):
//! - **Zero padding.** The padding is zeros written by us. glommio's DMA
//!   buffers are recycled memory: `DmaStreamWriter` padded with whatever
//!   an earlier segment left in its buffer — old markers and seals, valid
//!   records that vouched for the torn tail of a killed server, so its
//!   data directory refused to start.
//! - **One write in flight.** Every block write completes before the next
//!   one (or a sync) starts, so an older version of the tail block can
//!   never land after a newer one that was synced and acknowledged.
//! - **Truncate after the seal.** The seal is written (padded) and synced
//!   in its own batch, after the data it vouches for; then the file is cut
//!   to the seal's end and synced again, so a clean stop leaves nothing
//!   for recovery to cut. A crash between the two leaves zeros after the
//!   seal, which recovery cuts.
//!
//! On a file system without O_DIRECT (tmpfs) glommio falls back to
//! buffered I/O; the same writes are then merely aligned.

use std::io;

use glommio::io::{Directory, DmaFile, OpenOptions};
use shorty_runtime::driver::{SegmentWriter, Step, WriteFailure};
use shorty_service::log::direct::{BlockWrite, DirectAppender};
use shorty_service::log::WriteBatch;

/// Largest single block write (a multiple of any block size): a batch of
/// typical SHORTENs fits in one, and a larger one is written in pieces of
/// this size, one after another.
const CHUNK_SIZE: usize = 128 * 1024;

fn err(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

/// The segment being written.
struct Open {
    file: DmaFile,
    /// Which blocks each append writes (shared with the crash simulator).
    blocks: DirectAppender,
}

impl Open {
    /// Writes `bytes` at the end: the partial last block and the new
    /// bytes, zero-padded to whole blocks, one chunk at a time.
    async fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let align = usize::try_from(self.file.alignment())
            .unwrap_or(4096)
            .max(1);
        let BlockWrite {
            offset,
            bytes: data,
        } = self.blocks.append(bytes);
        let mut done = 0usize;
        while done < data.len() {
            let piece = &data[done..data.len().min(done + CHUNK_SIZE)];
            let mut buffer = self.file.alloc_dma_buffer(piece.len());
            buffer.as_bytes_mut().copy_from_slice(piece);
            let written = self
                .file
                .write_at(buffer, offset + done as u64)
                .await
                .map_err(err)?;
            // A short write (rare: a nearly full disk) goes on from the
            // block it stopped in; writes stay one at a time.
            let mut next = done + written.min(piece.len());
            if next < data.len() {
                next -= next % align;
            }
            if next <= done {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "a segment write wrote less than a block",
                ));
            }
            done = next;
        }
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Segment(Option<Open>);

impl SegmentWriter for Segment {
    async fn write(&mut self, batch: &WriteBatch) -> Result<(), WriteFailure> {
        if batch.create {
            let path = &batch.segment.path;
            // Readable too: glommio probes the device for polled I/O by
            // reading the file, and logs an error for a write-only one.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .dma_open(path)
                .await
                .map_err(|e| WriteFailure {
                    step: Step::Create,
                    error: io::Error::new(io::Error::from(e).kind(), format!("{}", path.display())),
                })?;
            let blocks = DirectAppender::new(file.alignment());
            let open = Open { file, blocks };
            if let Some(old) = self.0.replace(open) {
                let _ = old.file.close().await;
            }
        }
        let Some(open) = self.0.as_mut() else {
            return Err(WriteFailure {
                step: Step::Write,
                error: io::Error::other("segment not open"),
            });
        };
        if open.blocks.len() != batch.offset {
            return Err(WriteFailure {
                step: Step::Write,
                error: io::Error::other(format!(
                    "segment position {} does not match the batch offset {}",
                    open.blocks.len(),
                    batch.offset
                )),
            });
        }
        open.append(&batch.bytes)
            .await
            .map_err(WriteFailure::at(Step::Write))?;
        if batch.sync {
            open.file.fdatasync().await.map_err(|e| WriteFailure {
                step: Step::Sync,
                error: err(e),
            })?;
        }
        if batch.sync_dir {
            if let Some(dir) = batch.segment.path.parent() {
                let dir = Directory::open(dir).await.map_err(|e| WriteFailure {
                    step: Step::Sync,
                    error: err(e),
                })?;
                dir.sync().await.map_err(|e| WriteFailure {
                    step: Step::Sync,
                    error: err(e),
                })?;
                let _ = dir.close().await;
            }
        }
        if batch.seal {
            // Sealed, and the seal synced: cut the padding and sync the new
            // length, then close; the file is never written again.
            if let Some(open) = self.0.take() {
                open.file
                    .truncate(open.blocks.len())
                    .await
                    .map_err(|e| WriteFailure {
                        step: Step::Write,
                        error: err(e),
                    })?;
                open.file.fdatasync().await.map_err(|e| WriteFailure {
                    step: Step::Sync,
                    error: err(e),
                })?;
                open.file.close().await.map_err(|e| WriteFailure {
                    step: Step::Write,
                    error: err(e),
                })?;
            }
        }
        Ok(())
    }

    fn forget(&mut self) {
        // No write is in flight (each is awaited), so dropping the file
        // only closes its descriptor (glommio closes it on the ring); the
        // repair that follows rewrites the segment's end through a
        // descriptor of its own.
        self.0 = None;
    }
}
