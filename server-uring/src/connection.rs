//! One client connection: read, hand the bytes to the shard, wait for the
//! replies to settle, write them all in one go, repeat.
//!
//! tokio-uring cannot cancel a read: when a read is abandoned (timeout,
//! shutdown) its buffer stays with the kernel and any bytes it later
//! receives are lost to us. So an abandoned read always ends the
//! connection, and the socket is shut down first so the pending read
//! completes at once and its descriptor is released.

use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shorty_protocol::{ErrorCode, Reply};
use shorty_service::connection::ReadLimit;
use shorty_service::{ConnectionSlot, ReadTimer, ReplyQueue};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use crate::core::{Core, OpenGuard};

/// Bytes of free space guaranteed before each read.
const READ_CHUNK: usize = 16 * 1024;

/// A wait on the read side ended before any bytes came.
enum Interrupted {
    Timeout(ReadLimit),
    Shutdown,
}

pub(crate) async fn serve(core: Rc<Core>, stream: TcpStream, slot: ConnectionSlot) {
    let _open = OpenGuard::new(&core);
    // Replies go out as soon as they are ready; batching happens by
    // collecting all ready replies into one write, not by Nagle.
    let _ = stream.set_nodelay(true);
    match drive(&core, &stream).await {
        Ok(()) => {}
        Err(Interrupted::Timeout(ReadLimit::Frame)) => {
            // Best effort: tell the client why before closing.
            let mut bytes = Vec::new();
            let reply = Reply::Error {
                code: ErrorCode::TIMEOUT,
                message: "frame not completed within the frame timeout".as_bytes(),
            };
            if reply.encode(&mut bytes).is_ok() {
                let write = stream.write_all(bytes);
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            }
        }
        Err(Interrupted::Timeout(ReadLimit::Idle) | Interrupted::Shutdown) => {}
    }
    let _ = stream.shutdown(Shutdown::Both);
    drop(slot);
}

async fn drive(core: &Core, stream: &TcpStream) -> Result<(), Interrupted> {
    let config = &core.config;
    let mut shutdown = core.shutdown.clone();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut queue = ReplyQueue::new();
    let mut timer = ReadTimer::new();
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let (timeout, limit) = timer.next_timeout(config, Instant::now());
        let (len, cap) = (buf.len(), buf.capacity());
        let read = stream.read(buf.slice(len..cap));
        let (result, slice) = tokio::select! {
            biased;
            done = read => done,
            () = tokio::time::sleep(timeout) => return Err(Interrupted::Timeout(limit)),
            () = shutdown.triggered() => return Err(Interrupted::Shutdown),
        };
        buf = slice.into_inner();
        match result {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!("read failed: {err}");
                return Ok(());
            }
        }

        let outcome = core.shard.borrow_mut().handle_input(&buf, &mut queue);
        buf.drain(..outcome.consumed);
        timer.after_input(&outcome, Instant::now());
        if core.shard.borrow().has_log_work() {
            core.log_work.notify_one();
        }
        if outcome.consumed > 0 && !config.delay.is_zero() {
            // The seed's artificial work: a timer, never a blocked core.
            tokio::time::sleep(config.delay).await;
        }
        // Wait until every SHORTEN read so far is durable. No await lies
        // between the check and creating the `notified` future, so a batch
        // settling in between cannot be missed.
        loop {
            core.shard.borrow_mut().release(&mut queue);
            if !queue.has_pending() {
                break;
            }
            core.settled.notified().await;
        }
        if let Some(bytes) = queue.take_ready() {
            let write = stream.write_all(bytes);
            match tokio::time::timeout(config.idle_timeout, write).await {
                Ok((Ok(()), _)) => {}
                // A peer that stops reading is treated like an idle one.
                Ok((Err(_), _)) | Err(_) => return Ok(()),
            }
        }
        if queue.closing() {
            return Ok(());
        }
    }
}
