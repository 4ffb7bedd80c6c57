//! Appending to a segment with O_DIRECT block writes, sans-IO: which
//! blocks to write, with what bytes. Used by the glommio backend and by the
//! crash simulator, so that the simulator models the writes the backend
//! really makes.
//!
//! O_DIRECT writes whole blocks. A batch that ends mid-block is padded to
//! the block's end, and the next batch rewrites that block: its old bytes
//! (already synced, maybe acknowledged), then the new ones. The padding is
//! zeros, never whatever a recycled DMA buffer held: stale bytes there can
//! hold valid old markers and seals, which recovery would take as vouching
//! for a torn tail (issue 18, defect 19). The backend must also finish
//! each write before it starts the next, so an older version of the last
//! block can never land after a newer one; and after a seal it truncates
//! the padding ([`DirectAppender::len`] is where).

/// One block-aligned write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockWrite {
    /// File offset, a multiple of the block size.
    pub offset: u64,
    /// Whole blocks: the last block's earlier bytes, the new bytes, then
    /// zeros.
    pub bytes: Vec<u8>,
}

/// The state of one segment written with O_DIRECT: its length and the
/// bytes of its last, partial block.
#[derive(Debug, Clone)]
pub struct DirectAppender {
    block: u64,
    len: u64,
    tail: Vec<u8>,
}

impl DirectAppender {
    /// An empty file written in blocks of `block` bytes (the device's
    /// O_DIRECT alignment; 0 is taken as 1).
    pub fn new(block: u64) -> Self {
        Self {
            block: block.max(1),
            len: 0,
            tail: Vec::new(),
        }
    }

    /// Bytes appended so far, padding excluded: where a seal's truncation
    /// cuts the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// `true` before anything is appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The write that appends `bytes`: it starts at the last partial
    /// block and ends zero-padded to a whole block. The appender counts
    /// the bytes as written; after a failed write the segment is abandoned
    /// (the log writer repairs it from its durable length).
    pub fn append(&mut self, bytes: &[u8]) -> BlockWrite {
        let offset = self.len - self.tail.len() as u64;
        let mut out = std::mem::take(&mut self.tail);
        out.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
        let keep = (self.len % self.block) as usize;
        self.tail = out[out.len() - keep..].to_vec();
        let padded = (out.len() as u64).div_ceil(self.block) * self.block;
        out.resize(padded as usize, 0);
        BlockWrite { offset, bytes: out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rewrite_the_last_block_and_pad_with_zeros() {
        let mut a = DirectAppender::new(8);
        let w = a.append(b"abc");
        assert_eq!(
            w,
            BlockWrite {
                offset: 0,
                bytes: b"abc\0\0\0\0\0".to_vec()
            }
        );
        let w = a.append(b"defghij");
        assert_eq!(
            w,
            BlockWrite {
                offset: 0,
                bytes: b"abcdefghij\0\0\0\0\0\0".to_vec()
            }
        );
        assert_eq!(a.len(), 10);
        let w = a.append(b"klmnop");
        assert_eq!(
            w,
            BlockWrite {
                offset: 8,
                bytes: b"ijklmnop".to_vec()
            }
        );
        let w = a.append(b"q");
        assert_eq!(
            w,
            BlockWrite {
                offset: 16,
                bytes: b"q\0\0\0\0\0\0\0".to_vec()
            }
        );
        assert_eq!(a.len(), 17);
    }
}
