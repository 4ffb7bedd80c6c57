//! Log segment writes through glommio's `DmaStreamWriter` (O_DIRECT, on
//! io_uring): per batch, `write_all`, then `flush` (pad the partial block
//! and write it) and, when asked, `sync` (`fdatasync`). The zero padding
//! past the last record is overwritten by the next batch; a seal closes the
//! writer, which truncates the padding away, so a clean stop leaves nothing
//! for recovery to cut.
//!
//! O_DIRECT needs a file system that supports it (ext4, xfs; not tmpfs).

use std::io;

use futures_lite::AsyncWriteExt;
use glommio::io::{Directory, DmaStreamWriter, DmaStreamWriterBuilder, OpenOptions};
use shorty_runtime::driver::{SegmentWriter, Step, WriteFailure};
use shorty_service::log::WriteBatch;

/// DMA buffer size: a batch of typical SHORTENs fits in one.
const BUFFER_SIZE: usize = 128 * 1024;

fn err(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

#[derive(Default)]
pub(crate) struct Segment(Option<DmaStreamWriter>);

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
            // One buffer in flight at a time keeps the writes in file order.
            let writer = DmaStreamWriterBuilder::new(file)
                .with_buffer_size(BUFFER_SIZE)
                .with_write_behind(1)
                .build();
            if let Some(mut old) = self.0.replace(writer) {
                let _ = old.close().await;
            }
        }
        let Some(writer) = self.0.as_mut() else {
            return Err(WriteFailure {
                step: Step::Write,
                error: io::Error::other("segment not open"),
            });
        };
        if writer.current_pos() != batch.offset {
            return Err(WriteFailure {
                step: Step::Write,
                error: io::Error::other(format!(
                    "segment position {} does not match the batch offset {}",
                    writer.current_pos(),
                    batch.offset
                )),
            });
        }
        writer
            .write_all(&batch.bytes)
            .await
            .map_err(WriteFailure::at(Step::Write))?;
        // Write (padded) first, so a full disk shows as a failed write, not
        // a failed sync.
        writer
            .flush()
            .await
            .map_err(WriteFailure::at(Step::Write))?;
        if batch.sync {
            writer.sync().await.map_err(|e| WriteFailure {
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
            // Sealed: close, which truncates the padding past the seal.
            if let Some(mut writer) = self.0.take() {
                writer
                    .close()
                    .await
                    .map_err(WriteFailure::at(Step::Write))?;
            }
        }
        Ok(())
    }

    fn forget(&mut self) {
        // Dropping a DmaStreamWriter queues a truncate to its flushed
        // position, which could land after the repair has rewritten the
        // segment's end and cut its seal. After a failed write the writer
        // is of no use: leak it (once per disk-full episode) instead.
        if let Some(writer) = self.0.take() {
            std::mem::forget(writer);
        }
    }
}
