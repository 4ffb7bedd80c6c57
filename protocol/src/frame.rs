//! Length-prefixed frames: a `u32` little-endian payload length, then the
//! payload. This is the seed server's framing, byte for byte.
//!
//! Two ways in:
//! - [`parse_frame`] borrows from a `&[u8]` and never allocates (the
//!   httparse model); servers use it to handle every complete frame in a read
//!   buffer and then discard the consumed prefix once.
//! - [`FrameDecoder`] works on a [`BytesMut`] and hands out owned, zero-copy
//!   [`Bytes`] payloads (the `tokio_util::codec` model), one at a time
//!   ([`FrameDecoder::decode`]) or every complete frame at once as one
//!   owned [`Frames`] batch ([`FrameDecoder::decode_all`]), which pays the
//!   buffer's reference count once per batch instead of once per frame.
//!
//! Both check the announced length against the limit as soon as the 4-byte
//! header is in, before a single payload byte is buffered or reserved.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nom::Needed;

use crate::Error;

/// Size of the frame header: the payload length as a little-endian `u32`.
pub const HEADER_LEN: usize = 4;

/// Default maximum payload length accepted by decoders: 64 KiB.
///
/// Comfortably above the service's default maximum URL (8 KiB) plus message
/// overhead, and small enough that a connection can never make a server hold
/// more than this per frame. Raise it with [`FrameDecoder::with_max_frame_len`]
/// (the server derives its limit from `--max-url-bytes`).
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// The result of parsing input that may be incomplete.
///
/// Partial input is not an error: it says how many more bytes are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole value was parsed.
    Complete(T),
    /// More input is needed. `needed` is the number of additional bytes
    /// without which no progress is possible: while the header is incomplete,
    /// the rest of the header; once it is in, exactly the rest of the payload.
    Partial {
        /// Additional bytes needed, always at least 1.
        needed: usize,
    },
}

impl<T> Status<T> {
    /// `true` if a whole value was parsed.
    pub const fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }

    /// The parsed value, or `None` if input was partial.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(value) => Some(value),
            Status::Partial { .. } => None,
        }
    }
}

/// A complete frame borrowed from the input, as returned by [`parse_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    payload: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// The frame's payload.
    pub const fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// How many input bytes the frame occupies (header and payload): the
    /// number to consume before parsing the next frame.
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Parses one frame from the start of `input`, without copying or allocating.
///
/// Bytes after the frame are left for the next call: advance by
/// [`FrameRef::encoded_len`].
///
/// # Errors
/// [`Error::FrameTooLarge`] as soon as the header announces a payload longer
/// than `max_payload`, whether or not any of the payload is present.
///
/// # Examples
/// ```
/// use shorty_protocol::frame::{parse_frame, Status, DEFAULT_MAX_FRAME_LEN};
///
/// // A complete frame followed by the start of the next one.
/// let input = b"\x05\x00\x00\x00hello\x02\x00";
/// let Status::Complete(frame) = parse_frame(input, DEFAULT_MAX_FRAME_LEN)? else {
///     unreachable!()
/// };
/// assert_eq!(frame.payload(), b"hello");
/// assert_eq!(frame.encoded_len(), 9);
///
/// // Partial input says how many more bytes it needs: 2 more header bytes...
/// let rest = &input[frame.encoded_len()..];
/// assert_eq!(parse_frame(rest, DEFAULT_MAX_FRAME_LEN)?, Status::Partial { needed: 2 });
/// // ...and, once the header is in, exactly the rest of the payload.
/// assert_eq!(
///     parse_frame(b"\x05\x00\x00\x00he", DEFAULT_MAX_FRAME_LEN)?,
///     Status::Partial { needed: 3 }
/// );
/// # Ok::<(), shorty_protocol::Error>(())
/// ```
pub fn parse_frame(input: &[u8], max_payload: usize) -> Result<Status<FrameRef<'_>>, Error> {
    type NomError<'a> = nom::error::Error<&'a [u8]>;

    // Streaming parser: a short header is `Incomplete`, not an error.
    let (rest, announced) = match nom::number::streaming::le_u32::<_, NomError<'_>>(input) {
        Ok(parsed) => parsed,
        Err(nom::Err::Incomplete(needed)) => {
            return Ok(partial(needed, HEADER_LEN.saturating_sub(input.len())))
        }
        // `le_u32` has no failure mode besides `Incomplete`; treat anything
        // else as "need the rest of the header" rather than panicking.
        Err(_) => return Ok(partial(Needed::Unknown, HEADER_LEN)),
    };
    let len = usize::try_from(announced).unwrap_or(usize::MAX);
    if len > max_payload {
        return Err(Error::FrameTooLarge {
            len,
            max: max_payload,
        });
    }
    match nom::bytes::streaming::take::<_, _, NomError<'_>>(len)(rest) {
        Ok((_, payload)) => Ok(Status::Complete(FrameRef { payload })),
        Err(nom::Err::Incomplete(needed)) => Ok(partial(needed, len.saturating_sub(rest.len()))),
        Err(_) => Ok(partial(Needed::Unknown, len.saturating_sub(rest.len()))),
    }
}

fn partial<T>(needed: Needed, fallback: usize) -> Status<T> {
    let needed = match needed {
        Needed::Size(n) => n.get(),
        Needed::Unknown => fallback,
    };
    Status::Partial {
        needed: needed.max(1),
    }
}

/// Appends one frame (header and `payload`) to `dst`.
///
/// # Errors
/// [`Error::FrameTooLarge`] if `payload` is longer than `u32::MAX` bytes, the
/// most a header can announce. Nothing is written then.
///
/// # Examples
/// ```
/// let mut out = Vec::new();
/// shorty_protocol::frame::encode_frame(b"http://example.com/", &mut out)?;
/// assert_eq!(&out[..4], &[19, 0, 0, 0]);
/// # Ok::<(), shorty_protocol::Error>(())
/// ```
pub fn encode_frame<B: BufMut>(payload: &[u8], dst: &mut B) -> Result<(), Error> {
    put_header(payload.len(), dst)?;
    dst.put_slice(payload);
    Ok(())
}

/// Writes a frame header announcing `payload_len` bytes.
pub(crate) fn put_header<B: BufMut>(payload_len: usize, dst: &mut B) -> Result<(), Error> {
    let len = u32::try_from(payload_len).map_err(|_| Error::FrameTooLarge {
        len: payload_len,
        max: u32::MAX as usize,
    })?;
    dst.put_u32_le(len);
    Ok(())
}

/// A streaming frame decoder over a [`BytesMut`] read buffer.
///
/// The decoder holds no buffer and no state besides its limit: the caller
/// owns the read buffer, and each call looks at its start. A decoded payload
/// is split off the buffer and frozen (`split_to` + `freeze`), so it shares
/// the buffer's allocation instead of being copied.
///
/// After an error the buffer is left as it was; the stream cannot be
/// resynchronised and should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting payloads up to [`DEFAULT_MAX_FRAME_LEN`] bytes.
    pub const fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A decoder accepting payloads up to `max_frame_len` bytes.
    pub const fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }

    /// The largest payload this decoder accepts.
    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Takes one frame's payload off the front of `buf`, if a whole frame is
    /// there.
    ///
    /// On [`Status::Partial`] nothing is consumed; on [`Status::Complete`]
    /// the header and payload are removed from `buf`.
    ///
    /// # Errors
    /// [`Error::FrameTooLarge`] as soon as the header is in, if it announces
    /// more than [`max_frame_len`](Self::max_frame_len) bytes.
    ///
    /// # Examples
    /// ```
    /// use bytes::BytesMut;
    /// use shorty_protocol::frame::{FrameDecoder, Status};
    ///
    /// let decoder = FrameDecoder::new();
    /// let mut buf = BytesMut::from(&b"\x03\x00\x00\x00ab"[..]);
    /// assert_eq!(decoder.decode(&mut buf)?, Status::Partial { needed: 1 });
    /// buf.extend_from_slice(b"c");
    /// assert_eq!(decoder.decode(&mut buf)?, Status::Complete(bytes::Bytes::from_static(b"abc")));
    /// assert!(buf.is_empty());
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Status<Bytes>, Error> {
        let payload_len = match parse_frame(buf, self.max_frame_len)? {
            Status::Complete(frame) => frame.payload().len(),
            Status::Partial { needed } => return Ok(Status::Partial { needed }),
        };
        buf.advance(HEADER_LEN);
        Ok(Status::Complete(buf.split_to(payload_len).freeze()))
    }

    /// Takes every complete frame off the front of `buf` as one owned batch.
    ///
    /// The batch shares `buf`'s allocation (one `split_to` + `freeze` for
    /// all of it). If a frame over the limit follows complete frames, the
    /// complete ones are returned and the error comes with the next call.
    ///
    /// # Errors
    /// [`Error::FrameTooLarge`] when the first frame's header announces more
    /// than [`max_frame_len`](Self::max_frame_len) bytes.
    ///
    /// # Examples
    /// ```
    /// use bytes::BytesMut;
    /// use shorty_protocol::frame::FrameDecoder;
    ///
    /// let mut buf = BytesMut::from(&b"\x01\x00\x00\x00a\x02\x00\x00\x00bc\x05\x00\x00"[..]);
    /// let frames = FrameDecoder::new().decode_all(&mut buf)?;
    /// assert_eq!(frames.iter().collect::<Vec<_>>(), [&b"a"[..], &b"bc"[..]]);
    /// // The partial third frame stays in the buffer, and says what it needs.
    /// assert_eq!(frames.needed(), Some(1));
    /// assert_eq!(buf.len(), 3);
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn decode_all(&self, buf: &mut BytesMut) -> Result<Frames, Error> {
        let mut consumed = 0;
        let mut needed = None;
        loop {
            let rest = buf.get(consumed..).unwrap_or_default();
            match parse_frame(rest, self.max_frame_len) {
                Ok(Status::Complete(frame)) => consumed += frame.encoded_len(),
                Ok(Status::Partial { needed: n }) => {
                    needed = (!rest.is_empty()).then_some(n);
                    break;
                }
                Err(err) if consumed == 0 => return Err(err),
                Err(_) => break,
            }
        }
        Ok(Frames {
            batch: buf.split_to(consumed).freeze(),
            needed,
            max: self.max_frame_len,
        })
    }
}

/// Complete frames taken off a buffer at once by
/// [`FrameDecoder::decode_all`]: one owned allocation, frames inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    batch: Bytes,
    needed: Option<usize>,
    max: usize,
}

impl Frames {
    /// The frames' payloads, borrowed from the batch.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut rest: &[u8] = &self.batch;
        let max = self.max;
        core::iter::from_fn(move || match parse_frame(rest, max) {
            Ok(Status::Complete(frame)) => {
                rest = rest.get(frame.encoded_len()..).unwrap_or_default();
                Some(frame.payload())
            }
            _ => None,
        })
    }

    /// The frames' payloads as owned [`Bytes`] sharing the batch (one
    /// reference count increment each).
    pub fn payloads(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.iter().map(|payload| self.batch.slice_ref(payload))
    }

    /// `true` when no complete frame was in the buffer.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Bytes the batch took off the buffer (headers included).
    pub fn encoded_len(&self) -> usize {
        self.batch.len()
    }

    /// When a partial frame follows the batch, the bytes it still needs (as
    /// in [`Status::Partial`]); `None` when the buffer ended on a frame
    /// boundary.
    pub fn needed(&self) -> Option<usize> {
        self.needed
    }
}
