//! Body wrappers both ends of the hop use: a body that holds a guard until it is dropped,
//! and a body capped at a number of bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

/// A body that keeps `guard` until the body is dropped: after its end went out, or when
/// the peer went away (an admission permit, a drain guard, an execution-log row).
#[derive(Debug)]
pub struct Guarded<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> Guarded<B, G> {
    /// `body`, holding `guard`.
    pub fn new(body: B, guard: G) -> Self {
        Guarded {
            body,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a [`Capped`] body failed.
#[derive(Debug, thiserror::Error)]
pub enum CappedError<E> {
    /// The body went past its limit, in bytes.
    #[error("body over its limit of {0} bytes")]
    Over(u64),
    /// The body underneath failed.
    #[error(transparent)]
    Inner(E),
}

/// A body of at most `limit` bytes: past that the stream fails with
/// [`CappedError::Over`] and `tripped` is set, so the side reading it can answer 413.
#[derive(Debug)]
pub struct Capped<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    tripped: Arc<AtomicBool>,
}

impl<B> Capped<B> {
    /// `inner`, capped at `limit` bytes; `tripped` is set when it goes over.
    pub fn new(inner: B, limit: u64, tripped: Arc<AtomicBool>) -> Self {
        Capped {
            inner,
            remaining: limit,
            limit,
            tripped,
        }
    }
}

impl<B: Body + Unpin> Body for Capped<B> {
    type Data = B::Data;
    type Error = CappedError<B::Error>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.remaining() as u64;
                    if len > this.remaining {
                        this.tripped.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(CappedError::Over(this.limit))));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(CappedError::Inner(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = parts
            .iter()
            .map(|part| Ok(Frame::data(Bytes::from_static(part.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_within_its_cap_passes_whole() {
        let tripped = Arc::new(AtomicBool::new(false));
        let body = Capped::new(chunks(&["abc", "def"]), 6, Arc::clone(&tripped));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "abcdef");
        assert!(!tripped.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_body_past_its_cap_fails_and_trips_the_flag() {
        let tripped = Arc::new(AtomicBool::new(false));
        let body = Capped::new(chunks(&["abc", "defg"]), 6, Arc::clone(&tripped));
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, CappedError::Over(6)), "{err:?}");
        assert!(tripped.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_guard_lives_as_long_as_its_body() {
        let guard = Arc::new(());
        let body = Guarded::new(Full::new(Bytes::from_static(b"x")), Arc::clone(&guard));
        assert_eq!(Arc::strong_count(&guard), 2);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "x");
        assert_eq!(Arc::strong_count(&guard), 1);
    }
}
