//! Log segment writes through io_uring (`tokio_uring::fs::File`): per
//! batch, one write at the batch's offset and, when asked, one
//! `fdatasync`.

use std::io;

use shorty_runtime::driver::{SegmentWriter, Step, WriteFailure};
use shorty_service::log::WriteBatch;
use tokio_uring::fs::{File, OpenOptions};

#[derive(Default)]
pub(crate) struct Segment(Option<File>);

impl SegmentWriter for Segment {
    async fn write(&mut self, batch: &WriteBatch) -> Result<(), WriteFailure> {
        if batch.create {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&batch.segment.path)
                .await
                .map_err(WriteFailure::at(Step::Create))?;
            if let Some(old) = self.0.replace(file) {
                let _ = old.close().await;
            }
        }
        let Some(file) = self.0.as_ref() else {
            return Err(WriteFailure {
                step: Step::Write,
                error: io::Error::other("segment not open"),
            });
        };
        let (result, _) = file.write_all_at(batch.bytes.clone(), batch.offset).await;
        result.map_err(WriteFailure::at(Step::Write))?;
        if batch.sync {
            file.sync_data()
                .await
                .map_err(WriteFailure::at(Step::Sync))?;
        }
        if batch.sync_dir {
            // The new file's directory entry must be durable too.
            if let Some(dir) = batch.segment.path.parent() {
                let dir = File::open(dir)
                    .await
                    .map_err(WriteFailure::at(Step::Sync))?;
                dir.sync_all().await.map_err(WriteFailure::at(Step::Sync))?;
                let _ = dir.close().await;
            }
        }
        if batch.seal {
            // Sealed: never written again.
            if let Some(file) = self.0.take() {
                let _ = file.close().await;
            }
        }
        Ok(())
    }

    fn forget(&mut self) {
        self.0 = None;
    }
}
