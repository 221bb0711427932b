//! Reading a caller's request body within a size limit and a deadline.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::BodyExt;

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is (or declares to be) larger than the limit.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in effect.
        limit: usize,
    },
    /// The body did not arrive within the deadline.
    #[error("request body not received in time")]
    Timeout,
    /// The connection failed while reading.
    #[error("reading the request body: {0}")]
    Read(#[source] axum::Error),
}

/// Reads `body` completely. A declared `content-length` above `limit` is refused before
/// reading; the limit is enforced again while reading, and the whole read must finish
/// within `timeout`.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    if content_length(headers).is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    tokio::time::timeout(timeout, collect(body, limit))
        .await
        .map_err(|_| BodyError::Timeout)?
}

async fn collect(mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(BodyError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A request's declared `content-length`, if it is a valid number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECOND: Duration = Duration::from_secs(1);

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let items: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Body::from_stream(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn reads_a_body_within_the_limit() {
        let body = read_body(&HeaderMap::new(), chunks(&[b"ab", b"cd"]), 4, SECOND)
            .await
            .unwrap();
        assert_eq!(&body[..], b"abcd");
        let empty = read_body(&HeaderMap::new(), Body::empty(), 0, SECOND)
            .await
            .unwrap();
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_refused_before_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        // The body never arrives; refusing must not wait for it.
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let err = read_body(&headers, never, 4, SECOND).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 4 }), "{err}");
    }

    #[tokio::test]
    async fn limit_is_enforced_while_reading() {
        // No (or a lying) content-length: the stream itself is counted.
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("1"));
        let err = read_body(&headers, chunks(&[b"abc", b"de"]), 4, SECOND)
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { .. }), "{err}");
        let err = read_body(&HeaderMap::new(), Body::from("abcde"), 4, SECOND)
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn slow_bodies_time_out() {
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let err = read_body(&HeaderMap::new(), never, 4, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::Timeout), "{err}");
    }

    #[tokio::test]
    async fn broken_bodies_are_read_errors() {
        let items: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"a")),
            Err(std::io::Error::other("reset")),
        ];
        let err = read_body(
            &HeaderMap::new(),
            Body::from_stream(futures::stream::iter(items)),
            4,
            SECOND,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, BodyError::Read(_)), "{err}");
    }
}
