//! One core's group-commit task: takes the batches `shorty-service` hands
//! out and writes them with io_uring (`tokio_uring::fs::File`), one write
//! and one `fdatasync` per batch.

use std::io;
use std::rc::Rc;

use shorty_service::log::WriteBatch;
use tokio_uring::fs::{File, OpenOptions};

use crate::core::Core;

/// Runs until the runtime is dropped.
pub(crate) async fn run(core: Rc<Core>) {
    let mut file: Option<File> = None;
    loop {
        let batch = core.shard.borrow_mut().poll_batch();
        let Some(batch) = batch else {
            core.log_work.notified().await;
            continue;
        };
        let result = write(&mut file, &batch).await;
        core.shard.borrow_mut().batch_done(&batch, result);
        core.settled.notify_waiters();
    }
}

async fn write(file: &mut Option<File>, batch: &WriteBatch) -> io::Result<()> {
    if file.is_none() || batch.create.is_some() {
        let opened = OpenOptions::new()
            .write(true)
            .create(batch.create.is_some())
            .open(&batch.path)
            .await?;
        if batch.create.is_some() && batch.sync {
            // The new file's directory entry must be durable too.
            if let Some(dir) = batch.path.parent() {
                File::open(dir).await?.sync_all().await?;
            }
        }
        if let Some(old) = file.replace(opened) {
            old.close().await?;
        }
    }
    let file = file
        .as_ref()
        .ok_or_else(|| io::Error::other("segment not open"))?;
    let (result, _) = file.write_all_at(batch.bytes.clone(), batch.offset).await;
    result?;
    if batch.sync {
        file.sync_data().await?;
    }
    Ok(())
}
