//! Reading a request body as a stream: [`BodyReader`] and [`ReadBodyError`].

use std::io::{self, Cursor, Read};

use crate::bindings::handler::wasi::http::types::{IncomingBody, IncomingRequest};
use crate::bindings::handler::wasi::io::streams::{InputStream, StreamError};

use super::{Request, Response};

/// How much is asked of the host per read at most.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The request body, read as it arrives instead of whole.
///
/// Streaming handlers ([`export_streaming_handler!`](crate::export_streaming_handler),
/// [`Router::route_streaming`](super::Router::route_streaming)) receive one beside the
/// request. It implements [`std::io::Read`]: each `read` waits until some of the body has
/// arrived and returns it, and `Ok(0)` marks the end. The SDK applies no size limit to a
/// streamed body (the platform's `limits.max_request_bytes` still applies before the body
/// reaches the component); [`read_all`](Self::read_all) reads it whole up to a limit of
/// your choosing.
///
/// In tests, build one over bytes with [`BodyReader::from_bytes`]:
///
/// ```
/// use std::io::Read;
/// use palisade_sdk::http::BodyReader;
///
/// let mut body = BodyReader::from_bytes("line one\nline two\n");
/// let mut first = [0u8; 9];
/// body.read_exact(&mut first).unwrap();
/// assert_eq!(&first, b"line one\n");
/// assert_eq!(body.read_all(1024).unwrap(), b"line two\n");
/// ```
pub struct BodyReader {
    source: Source,
}

enum Source {
    Bytes(Cursor<Vec<u8>>),
    Wasi(WasiBody),
}

/// The host's body stream, with the resources it belongs to; dropped in that order.
struct WasiBody {
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
    request: Option<IncomingRequest>,
    ended: bool,
}

impl BodyReader {
    /// A reader over `bytes`, for tests and for bodies already in memory.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        BodyReader {
            source: Source::Bytes(Cursor::new(bytes.into())),
        }
    }

    /// Opens the body of `request`; `None` if the host refuses it.
    pub(crate) fn incoming(request: IncomingRequest) -> Option<Self> {
        let body = request.consume().ok()?;
        let stream = body.stream().ok()?;
        Some(BodyReader {
            source: Source::Wasi(WasiBody {
                stream: Some(stream),
                body: Some(body),
                request: Some(request),
                ended: false,
            }),
        })
    }

    /// Reads the rest of the body into memory, refusing more than `limit` bytes.
    ///
    /// On [`ReadBodyError::TooLarge`] the body is left partly read. A [`ReadBodyError`]
    /// converts into the response that reports it (413 or 400):
    ///
    /// ```
    /// use palisade_sdk::http::{BodyReader, Response};
    ///
    /// fn upload(body: BodyReader) -> Response {
    ///     match body.read_all(8) {
    ///         Ok(bytes) => Response::text(200, format!("{} bytes", bytes.len())),
    ///         Err(error) => error.into(),
    ///     }
    /// }
    /// assert_eq!(upload(BodyReader::from_bytes("12345")).body(), b"5 bytes");
    /// assert_eq!(upload(BodyReader::from_bytes("123456789")).status(), 413);
    /// ```
    pub fn read_all(mut self, limit: usize) -> Result<Vec<u8>, ReadBodyError> {
        let mut bytes = Vec::new();
        let mut buffer = vec![0u8; READ_CHUNK_BYTES];
        loop {
            let read = match self.read(&mut buffer) {
                Ok(0) => return Ok(bytes),
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(ReadBodyError::Failed(error.to_string())),
            };
            if bytes.len() + read > limit {
                return Err(ReadBodyError::TooLarge { limit });
            }
            bytes.extend_from_slice(&buffer[..read]);
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::Bytes(cursor) => cursor.read(buf),
            Source::Wasi(body) => body.read(buf),
        }
    }
}

impl WasiBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.ended {
            return Ok(0);
        }
        let Some(stream) = &self.stream else {
            return Ok(0);
        };
        let wanted = buf.len().min(READ_CHUNK_BYTES) as u64;
        loop {
            match stream.blocking_read(wanted) {
                // The host returns at most `wanted` bytes, so all of them fit.
                Ok(chunk) if chunk.is_empty() => continue,
                Ok(chunk) => {
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    return Ok(chunk.len());
                }
                Err(StreamError::Closed) => {
                    self.ended = true;
                    return Ok(0);
                }
                Err(StreamError::LastOperationFailed(error)) => {
                    self.ended = true;
                    return Err(io::Error::other(error.to_debug_string()));
                }
            }
        }
    }
}

impl Drop for WasiBody {
    fn drop(&mut self) {
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            drop(IncomingBody::finish(body));
        }
        drop(self.request.take());
    }
}

/// Why a request body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadBodyError {
    /// The body is longer than the limit.
    #[error("the request body exceeds {limit} bytes")]
    TooLarge {
        /// The limit it exceeds, in bytes.
        limit: usize,
    },
    /// The stream failed; the host's description.
    #[error("the request body could not be read: {0}")]
    Failed(String),
}

impl From<ReadBodyError> for Response {
    /// 413 `{"error":"payload_too_large",…}` for a body over the limit, 400
    /// `{"error":"bad_request",…}` for one that could not be read.
    fn from(error: ReadBodyError) -> Self {
        match error {
            ReadBodyError::TooLarge { .. } => {
                Response::error_json(413, "payload_too_large", Some(&error.to_string()))
            }
            ReadBodyError::Failed(_) => Response::bad_request(error.to_string()),
        }
    }
}

/// Reads the body whole for a buffered handler: over `limit` bytes (declared in
/// `content-length`, or read) is a 413, a failed read a 400.
pub(crate) fn read_whole(
    request: &Request,
    body: BodyReader,
    limit: usize,
) -> Result<Vec<u8>, Response> {
    let declared_length = request
        .header("content-length")
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > limit as u64) {
        return Err(ReadBodyError::TooLarge { limit }.into());
    }
    body.read_all(limit).map_err(Response::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use serde_json::{Value, json};

    #[test]
    fn reads_in_pieces_then_ends() {
        let mut body = BodyReader::from_bytes("abcdef");
        let mut buffer = [0u8; 4];
        assert_eq!(body.read(&mut buffer).unwrap(), 4);
        assert_eq!(&buffer, b"abcd");
        assert_eq!(body.read(&mut buffer).unwrap(), 2);
        assert_eq!(&buffer[..2], b"ef");
        assert_eq!(body.read(&mut buffer).unwrap(), 0);
    }

    #[test]
    fn read_all_enforces_the_limit() {
        assert_eq!(BodyReader::from_bytes("").read_all(0).unwrap(), b"");
        assert_eq!(BodyReader::from_bytes("abc").read_all(3).unwrap(), b"abc");
        assert_eq!(
            BodyReader::from_bytes("abcd").read_all(3),
            Err(ReadBodyError::TooLarge { limit: 3 })
        );
        let big = vec![1u8; READ_CHUNK_BYTES * 2 + 1];
        assert_eq!(
            BodyReader::from_bytes(big.clone())
                .read_all(big.len())
                .unwrap(),
            big
        );
        assert!(
            BodyReader::from_bytes(big.clone())
                .read_all(big.len() - 1)
                .is_err()
        );
    }

    #[test]
    fn read_all_after_a_partial_read_returns_the_rest() {
        let mut body = BodyReader::from_bytes("head:rest");
        let mut head = [0u8; 5];
        body.read_exact(&mut head).unwrap();
        assert_eq!(body.read_all(4).unwrap(), b"rest");
    }

    #[test]
    fn errors_become_413_and_400() {
        let response = Response::from(ReadBodyError::TooLarge { limit: 10 });
        assert_eq!(response.status(), 413);
        assert_eq!(
            response.body_json::<Value>().unwrap(),
            json!({"error": "payload_too_large", "message": "the request body exceeds 10 bytes"})
        );
        let response = Response::from(ReadBodyError::Failed("reset".into()));
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.body_json::<Value>().unwrap(),
            json!({"error": "bad_request", "message": "the request body could not be read: reset"})
        );
    }

    #[test]
    fn read_whole_trusts_a_too_large_content_length_without_reading() {
        let request = Request::new(Method::Post, "/").with_header("Content-Length", " 11 ");
        let refused = read_whole(&request, BodyReader::from_bytes("short"), 10).unwrap_err();
        assert_eq!(refused.status(), 413);

        let request = Request::new(Method::Post, "/").with_header("content-length", "5");
        assert_eq!(
            read_whole(&request, BodyReader::from_bytes("hello"), 10).unwrap(),
            b"hello"
        );
        // A body longer than it declared is still held to the limit.
        let refused = read_whole(&request, BodyReader::from_bytes("hello world"), 10).unwrap_err();
        assert_eq!(refused.status(), 413);
    }
}
