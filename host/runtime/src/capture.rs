//! Bounded capture of a guest's stdout and stderr. Output past the bound is dropped and
//! counted; writing never fails, so a chatty guest is not turned into a trapping one.
//!
//! The guest writes through a synchronous `wasi:io` output stream that appends in place:
//! no background task, no round trip per write. (wasmtime's default adapter over an
//! `AsyncWrite` hands every write to a worker task and waits for it, which made a guest
//! writing 200,000 lines take longer than its deadline.)

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: u64,
}

/// A stdout/stderr sink that keeps at most `capacity` bytes.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    capacity: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl Capture {
    /// A capture keeping at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        Capture {
            capacity,
            buffer: Arc::default(),
        }
    }

    /// The bytes kept and the number of bytes dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, u64) {
        match self.buffer.lock() {
            Ok(mut b) => (std::mem::take(&mut b.bytes), b.dropped),
            Err(_) => (Vec::new(), 0),
        }
    }

    fn append(&self, data: &[u8]) {
        if let Ok(mut b) = self.buffer.lock() {
            let room = self.capacity.saturating_sub(b.bytes.len());
            let kept = room.min(data.len());
            b.bytes.extend_from_slice(&data[..kept]);
            b.dropped += (data.len() - kept) as u64;
        }
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// Largest write offered to the guest at once (what `check-write` answers).
const WRITE_PERMIT_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT_BYTES)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_bound_is_dropped_and_counted() {
        let capture = Capture::new(4);
        capture.append(b"abc");
        capture.append(b"def");
        assert_eq!(capture.take(), (b"abcd".to_vec(), 2));
    }
}
