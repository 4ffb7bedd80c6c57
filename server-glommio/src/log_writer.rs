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

/// A glommio error as an `io::Error` that keeps the OS error inside it as
/// its source: glommio's own conversion keeps only the kind and the text
/// of a file operation's error, and the log needs the error number to tell
/// running out of descriptors (retried) from a failure (fatal).
fn err(e: glommio::GlommioError<()>) -> io::Error {
    let text = e.to_string();
    match e {
        glommio::GlommioError::EnhancedIoError { source, .. } => {
            io::Error::new(source.kind(), Described { text, source })
        }
        other => io::Error::from(other),
    }
}

/// glommio's description of a failed file operation (the operation and
/// path), with the OS error it came from.
#[derive(Debug)]
struct Described {
    text: String,
    source: io::Error,
}

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Described {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
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
                    error: err(e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use glommio::{LocalExecutorBuilder, Placement};
    use shorty_service::log::segments::SegmentRef;
    use std::path::Path;

    fn batch(path: &Path, create: bool, offset: usize, bytes: &[u8], seal: bool) -> WriteBatch {
        WriteBatch {
            segment: SegmentRef {
                idx: 0,
                number: 0,
                path: path.to_owned(),
            },
            create,
            offset: offset as u64,
            bytes: Bytes::copy_from_slice(bytes),
            sync: true,
            sync_dir: create,
            seal,
        }
    }

    /// Whether the block device holding `path` has poll queues
    /// (`queue/io_poll` of its whole disk is `1`); `false` for a file
    /// system without a block device (tmpfs).
    fn device_polls(path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(path).expect("stat the temp dir").dev();
        // glibc's `gnu_dev_major`.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        std::fs::read_to_string(format!("/sys/dev/block/{major}:0/queue/io_poll"))
            .is_ok_and(|polls| polls.trim() == "1")
    }

    /// Issue 23 (glommio's durable SHORTEN at 2.5x shorty-uring's CPU):
    /// glommio's probe for polled I/O read a new, empty segment at offset
    /// 0, which completes at end of file without reaching the device, so
    /// it judged every device pollable and sent the log's writes to its
    /// `IOPOLL` ring. On a device without poll queues (this virtio disk)
    /// such a write completes only by its interrupt while the executor
    /// enters the kernel again and again to poll for it: ~190
    /// `io_uring_enter` calls per group commit. The vendored glommio now
    /// believes the device's `queue/io_poll`; the segment's writes must go
    /// to the poll ring only when the device polls.
    #[test]
    fn segment_writes_use_the_poll_ring_only_on_a_device_that_polls() {
        let dir = tempfile::tempdir().expect("temp dir");
        let polls = device_polls(dir.path());
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(512 * 1024)
            .make()
            .expect("a glommio executor");
        let path = dir.path().join("segment.log");
        let (polled, all) = executor.run(async move {
            let mut segment = Segment::default();
            let mut offset = 0;
            for i in 0..4usize {
                let bytes = vec![7u8; 100 + i];
                segment
                    .write(&batch(&path, i == 0, offset, &bytes, false))
                    .await
                    .unwrap();
                offset += bytes.len();
            }
            let stats = glommio::executor().io_stats();
            (
                stats.poll_ring.file_writes().0,
                stats.all_rings().file_writes().0,
            )
        });
        assert!(all >= 4, "the segment's writes are counted ({all})");
        if !polls {
            assert_eq!(
                polled, 0,
                "{polled} of {all} segment writes went to the poll ring of a device without \
                 poll queues"
            );
        }
    }

    /// Defect 19's cause, on a real file: after every batch the file holds
    /// exactly the bytes written, then zeros — never bytes an earlier
    /// segment left in a recycled DMA buffer — and a seal leaves exactly
    /// the bytes written. (On tmpfs glommio falls back to buffered I/O and
    /// the same must hold.)
    #[test]
    fn padding_is_zeros_and_a_seal_cuts_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(512 * 1024)
            .make()
            .expect("a glommio executor");
        executor.run(async move {
            let mut segment = Segment::default();
            // An earlier segment fills the DMA buffers with non-zero bytes.
            let old = dir.path().join("old.log");
            let junk = vec![0xEE; 100_000];
            segment
                .write(&batch(&old, true, 0, &junk, false))
                .await
                .unwrap();
            segment
                .write(&batch(&old, false, junk.len(), b"seal", true))
                .await
                .unwrap();
            assert_eq!(std::fs::read(&old).unwrap().len(), junk.len() + 4);

            let new = dir.path().join("new.log");
            let mut expected = Vec::new();
            for i in 0..60usize {
                let bytes = vec![1 + i as u8; 37 * (1 + i % 7)];
                let b = batch(&new, i == 0, expected.len(), &bytes, false);
                segment.write(&b).await.unwrap();
                expected.extend_from_slice(&bytes);
                let on_disk = std::fs::read(&new).unwrap();
                assert_eq!(&on_disk[..expected.len()], &expected[..], "batch {i}");
                assert!(
                    on_disk[expected.len()..].iter().all(|&b| b == 0),
                    "after batch {i} the padding holds {:?}",
                    on_disk[expected.len()..].iter().find(|&&b| b != 0)
                );
            }
            let seal = batch(&new, false, expected.len(), b"the seal", true);
            segment.write(&seal).await.unwrap();
            expected.extend_from_slice(b"the seal");
            assert_eq!(std::fs::read(&new).unwrap(), expected);
        });
    }
}
