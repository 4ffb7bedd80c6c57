//! Log segment writes through io_uring (`tokio_uring::fs::File`): one write
//! at the batch's offset and one `fdatasync` per group-commit batch.

use std::io;

use shorty_service::driver::SegmentFile;
use shorty_service::log::WriteBatch;
use tokio_uring::fs::{File, OpenOptions};

pub(crate) struct Segment(File);

impl SegmentFile for Segment {
    async fn write_batch(slot: &mut Option<Self>, batch: &WriteBatch) -> io::Result<()> {
        if let Some(path) = &batch.create {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .await?;
            if batch.sync {
                // The new file's directory entry must be durable too.
                if let Some(dir) = path.parent() {
                    File::open(dir).await?.sync_all().await?;
                }
            }
            if let Some(Segment(old)) = slot.replace(Segment(file)) {
                old.close().await?;
            }
        }
        let Some(Segment(file)) = slot.as_ref() else {
            return Err(io::Error::other("segment not open"));
        };
        let (result, _) = file.write_all_at(batch.bytes.clone(), batch.offset).await;
        result?;
        if batch.sync {
            file.sync_data().await?;
        }
        Ok(())
    }
}
