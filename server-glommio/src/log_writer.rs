//! Log segment writes through glommio's `DmaStreamWriter` (O_DIRECT, on
//! io_uring): per group-commit batch, `write_all`, then `sync` (pad the
//! partial block, write, `fdatasync`) or, with `--sync never`, `flush`
//! (pad and write only). The zero padding past the last record is
//! overwritten by the next batch; after a crash, recovery reads it as a
//! torn tail and cuts it off.
//!
//! O_DIRECT needs a file system that supports it (ext4, xfs; not tmpfs).

use std::io;

use futures_lite::AsyncWriteExt;
use glommio::io::{Directory, DmaStreamWriter, DmaStreamWriterBuilder, OpenOptions};
use shorty_service::driver::SegmentFile;
use shorty_service::log::WriteBatch;

/// DMA buffer size: a batch of typical SHORTENs fits in one.
const BUFFER_SIZE: usize = 128 * 1024;

pub(crate) struct Segment(DmaStreamWriter);

impl SegmentFile for Segment {
    async fn write_batch(slot: &mut Option<Self>, batch: &WriteBatch) -> io::Result<()> {
        if let Some(path) = &batch.create {
            // Readable too: glommio probes the device for polled I/O by
            // reading the file, and logs an error for a write-only one.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .dma_open(path)
                .await
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            if batch.sync {
                // The new file's directory entry must be durable too.
                if let Some(dir) = path.parent() {
                    Directory::open(dir)
                        .await
                        .map_err(io::Error::from)?
                        .sync()
                        .await
                        .map_err(io::Error::from)?;
                }
            }
            // One buffer in flight at a time keeps the writes in file order:
            // with write-behind, a later unsynced buffer could land before an
            // earlier one and leave a hole that recovery must reason about.
            let writer = DmaStreamWriterBuilder::new(file)
                .with_buffer_size(BUFFER_SIZE)
                .with_write_behind(1)
                .build();
            if let Some(Segment(mut old)) = slot.replace(Segment(writer)) {
                // Writes the padded tail and truncates the padding away.
                old.close().await?;
            }
        }
        let Some(Segment(writer)) = slot.as_mut() else {
            return Err(io::Error::other("segment not open"));
        };
        if writer.current_pos() != batch.offset {
            return Err(io::Error::other(format!(
                "segment position {} does not match the batch offset {}",
                writer.current_pos(),
                batch.offset
            )));
        }
        writer.write_all(&batch.bytes).await?;
        if batch.sync {
            writer.sync().await.map_err(io::Error::from)?;
        } else {
            writer.flush().await?;
        }
        Ok(())
    }
}
