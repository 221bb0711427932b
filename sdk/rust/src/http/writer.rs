//! Writing a streaming response body: [`BodyWriter`] and [`StreamClosed`].

use std::fmt;
use std::io;

use crate::bindings::handler::wasi::io::streams::{OutputStream, StreamError};

/// The most `blocking-write-and-flush` accepts per call, and so the largest piece a
/// [`BodyWriter`] hands to the host at once.
pub(crate) const WRITE_CHUNK_BYTES: usize = 4096;

/// Writes the body of a streaming [`Response`](super::Response), chunk by chunk.
///
/// The producer given to [`Response::stream`](super::Response::stream) receives one after
/// the status and headers have been sent. Every [`write`](Self::write) is flushed before
/// it returns, so each chunk leaves the component at once; a chunk larger than 4096 bytes
/// is sent as several pieces of at most 4096 bytes.
///
/// A write fails with [`StreamClosed`] when the body can no longer be delivered: the
/// caller went away, or the platform cut the body at its size limit. The body is lost
/// from then on; every later write fails the same way, so return the error (`?`) and stop
/// producing.
///
/// [`write!`] and [`writeln!`] work on a `BodyWriter` and return
/// `Result<(), StreamClosed>`. It also implements [`std::io::Write`] (a closed stream is an
/// [`io::ErrorKind::BrokenPipe`] error), for `std::io::copy`, `serde_json::to_writer` and
/// the like.
pub struct BodyWriter {
    sink: Sink,
    written: u64,
    closed: Option<StreamClosed>,
}

enum Sink {
    /// The response body's `wasi:io` output stream.
    Wasi(OutputStream),
    /// Collected in memory (native tests, [`Response::into_body_bytes`](super::Response::into_body_bytes)).
    Memory {
        bytes: Vec<u8>,
        /// The size of each piece handed over, as the host would see them.
        pieces: Vec<usize>,
        /// Writes that would exceed this fail, like a body the platform cuts at its limit.
        limit: usize,
    },
}

impl BodyWriter {
    pub(crate) fn wasi(stream: OutputStream) -> Self {
        BodyWriter::new(Sink::Wasi(stream))
    }

    pub(crate) fn memory(limit: usize) -> Self {
        BodyWriter::new(Sink::Memory {
            bytes: Vec::new(),
            pieces: Vec::new(),
            limit,
        })
    }

    fn new(sink: Sink) -> Self {
        BodyWriter {
            sink,
            written: 0,
            closed: None,
        }
    }

    /// Sends `bytes` and flushes them. An empty write sends nothing.
    ///
    /// Fails with [`StreamClosed`] when the body can no longer be delivered; see
    /// [`BodyWriter`].
    pub fn write(&mut self, bytes: impl AsRef<[u8]>) -> Result<(), StreamClosed> {
        if let Some(closed) = &self.closed {
            return Err(closed.clone());
        }
        for piece in bytes.as_ref().chunks(WRITE_CHUNK_BYTES) {
            if let Err(closed) = self.sink.write_piece(piece) {
                self.closed = Some(closed.clone());
                return Err(closed);
            }
            self.written += piece.len() as u64;
        }
        Ok(())
    }

    /// Formats and sends `args`; this is what [`write!`] and [`writeln!`] call.
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), StreamClosed> {
        match args.as_str() {
            Some(text) => self.write(text),
            None => self.write(args.to_string()),
        }
    }

    /// How many body bytes have been sent so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Whether a write has failed, so that nothing more can be sent.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// The collected bytes and piece sizes of a memory writer; `None` for the host stream.
    pub(crate) fn into_memory(self) -> Option<(Vec<u8>, Vec<usize>)> {
        match self.sink {
            Sink::Memory { bytes, pieces, .. } => Some((bytes, pieces)),
            Sink::Wasi(_) => None,
        }
    }
}

impl Sink {
    fn write_piece(&mut self, piece: &[u8]) -> Result<(), StreamClosed> {
        match self {
            Sink::Wasi(stream) => {
                stream
                    .blocking_write_and_flush(piece)
                    .map_err(|error| match error {
                        StreamError::Closed => StreamClosed::new(None),
                        StreamError::LastOperationFailed(error) => {
                            StreamClosed::new(Some(error.to_debug_string()))
                        }
                    })
            }
            Sink::Memory {
                bytes,
                pieces,
                limit,
            } => {
                if bytes.len() + piece.len() > *limit {
                    return Err(StreamClosed::new(Some(format!(
                        "the body exceeds {limit} bytes"
                    ))));
                }
                bytes.extend_from_slice(piece);
                pieces.push(piece.len());
                Ok(())
            }
        }
    }
}

impl io::Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        BodyWriter::write(self, buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        BodyWriter::write(self, buf)?;
        Ok(())
    }

    /// Every write is already flushed.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The response body can no longer be delivered: the caller went away, or the platform cut
/// the body at its size limit. Returned by [`BodyWriter`]'s writes; return it from the
/// producer to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClosed {
    detail: Option<String>,
}

impl StreamClosed {
    pub(crate) fn new(detail: Option<String>) -> Self {
        StreamClosed { detail }
    }

    /// The host's description of the failure, when it gave one.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

impl fmt::Display for StreamClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response body stream is closed")?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StreamClosed {}

impl From<StreamClosed> for io::Error {
    fn from(closed: StreamClosed) -> Self {
        io::Error::new(io::ErrorKind::BrokenPipe, closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_writes_are_sent_in_pieces_of_at_most_4096_bytes() {
        let mut writer = BodyWriter::memory(usize::MAX);
        let big = vec![7u8; 2 * WRITE_CHUNK_BYTES + 10];
        writer.write(&big).unwrap();
        writer.write(b"tail").unwrap();
        writer.write(b"").unwrap();
        assert_eq!(writer.bytes_written(), big.len() as u64 + 4);
        let (bytes, pieces) = writer.into_memory().unwrap();
        assert_eq!(pieces, [4096, 4096, 10, 4]);
        assert_eq!(&bytes[..big.len()], &big[..]);
        assert_eq!(&bytes[big.len()..], b"tail");
    }

    #[test]
    fn write_macros_format_into_the_body() {
        let mut writer = BodyWriter::memory(usize::MAX);
        write!(writer, "a{}", 1).unwrap();
        let name = "b";
        writeln!(writer, " and {name}").unwrap();
        writeln!(writer).unwrap();
        let (bytes, _) = writer.into_memory().unwrap();
        assert_eq!(bytes, b"a1 and b\n\n");
    }

    #[test]
    fn a_failed_write_closes_the_writer_for_good() {
        let mut writer = BodyWriter::memory(10);
        writer.write(b"0123456").unwrap();
        let closed = writer.write(b"789abc").unwrap_err();
        assert_eq!(closed.detail(), Some("the body exceeds 10 bytes"));
        assert_eq!(
            closed.to_string(),
            "the response body stream is closed: the body exceeds 10 bytes"
        );
        assert!(writer.is_closed());
        // Even a write that would fit fails now: the body is already incomplete.
        assert_eq!(writer.write(b"x"), Err(closed));
        assert_eq!(writer.bytes_written(), 7);
        assert_eq!(writer.into_memory().unwrap().0, b"0123456");
    }

    #[test]
    fn io_write_reports_a_closed_stream_as_broken_pipe() {
        use std::io::Write as _;
        let mut writer = BodyWriter::memory(4);
        std::io::copy(&mut &b"abc"[..], &mut writer).unwrap();
        let error = std::io::copy(&mut &b"def"[..], &mut writer).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert!(writer.flush().is_ok());
        assert_eq!(writer.into_memory().unwrap().0, b"abc");
    }

    #[test]
    fn stream_closed_without_detail() {
        assert_eq!(
            StreamClosed::new(None).to_string(),
            "the response body stream is closed"
        );
    }
}
