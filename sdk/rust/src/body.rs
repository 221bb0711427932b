//! Reading and writing whole `wasi:http` bodies, for the handler export (buffered
//! responses) and the HTTP client.

#[cfg(all(feature = "http-client", not(palisade_fake_host)))]
use crate::bindings::handler::wasi::http::types::IncomingBody;
use crate::bindings::handler::wasi::http::types::OutgoingBody;
use crate::bindings::handler::wasi::io::streams::StreamError;

/// How much is asked for per read.
#[cfg(all(feature = "http-client", not(palisade_fake_host)))]
const READ_CHUNK_BYTES: u64 = 64 * 1024;

/// The most `blocking-write-and-flush` accepts per call.
const WRITE_CHUNK_BYTES: usize = 4096;

/// Why a body could not be read.
#[cfg(all(feature = "http-client", not(palisade_fake_host)))]
pub(crate) enum ReadError {
    /// The body is longer than the limit.
    TooLarge,
    /// The body stream could not be opened.
    Unavailable,
    /// The stream failed; the host's description.
    Failed(String),
}

/// Reads `body` to its end, refusing more than `limit` bytes.
#[cfg(all(feature = "http-client", not(palisade_fake_host)))]
pub(crate) fn read_all(body: IncomingBody, limit: usize) -> Result<Vec<u8>, ReadError> {
    let stream = body.stream().map_err(|()| ReadError::Unavailable)?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK_BYTES) {
            Ok(chunk) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge);
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(ReadError::Failed(error.to_debug_string()));
            }
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok(bytes)
}

/// Writes `bytes` to `body` and finishes it. The error is the host's description.
pub(crate) fn write_all(body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    let stream = body
        .write()
        .map_err(|()| "the body stream could not be opened".to_owned())?;
    for chunk in bytes.chunks(WRITE_CHUNK_BYTES) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|error| match error {
                StreamError::Closed => "the body stream was closed".to_owned(),
                StreamError::LastOperationFailed(error) => error.to_debug_string(),
            })?;
    }
    drop(stream);
    OutgoingBody::finish(body, None).map_err(|error| error.to_string())
}
