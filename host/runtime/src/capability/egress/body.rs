//! The wrappers that enforce per-request limits on the way out and in: a byte-counting
//! socket, a capped request body, and a capped response body with the between-bytes
//! timeout and the call's deadline.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::{Error, WasiBody};

/// What one call sent and received through egress; shared with the runtime so the counts
/// survive a call that ends by its deadline.
#[derive(Debug, Default)]
pub struct EgressCounters {
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    requests: AtomicU32,
}

impl EgressCounters {
    /// Bytes written to egress sockets (headers, bodies and TLS framing).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes read from egress sockets (headers, bodies and TLS framing).
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Outgoing requests started.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts one more request unless `max` were already started; returns whether it may go.
    pub(crate) fn start_request(&self, max: u32) -> bool {
        self.requests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }
}

/// A socket that adds every byte read or written to the call's counters.
pub(crate) struct Counted<S> {
    inner: S,
    counters: Arc<EgressCounters>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, counters: Arc<EgressCounters>) -> Self {
        Counted { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = (buf.filled().len() - before) as u64;
        self.counters.bytes_in.fetch_add(read, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.counters
            .bytes_out
            .fetch_add(written as u64, Ordering::Relaxed);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.counters
            .bytes_out
            .fetch_add(written as u64, Ordering::Relaxed);
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The guest's request body, refused with `HTTP-request-body-size` past `max` bytes.
pub(crate) struct RequestBody {
    inner: WasiBody,
    sent: u64,
    max: u64,
    failed: bool,
}

impl RequestBody {
    pub(crate) fn new(inner: WasiBody, max: u64) -> Self {
        RequestBody {
            inner,
            sent: 0,
            max,
            failed: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
            if self.sent > self.max {
                self.failed = true;
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(self.max)))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An upstream response body, cut with `HTTP-response-body-size` past `max` bytes, with
/// `connection-read-timeout` after `between_bytes` of silence and `HTTP-response-timeout`
/// at the call's deadline.
pub(crate) struct ResponseBody<B> {
    inner: B,
    received: u64,
    max: u64,
    between_bytes: Option<(Duration, Pin<Box<Sleep>>)>,
    deadline: Pin<Box<Sleep>>,
    done: bool,
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(
        inner: B,
        max: u64,
        between_bytes: Option<Duration>,
        deadline: Instant,
    ) -> Self {
        ResponseBody {
            inner,
            received: 0,
            max,
            between_bytes: between_bytes.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done: false,
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.done = true;
        Poll::Ready(Some(Err(error)))
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.max {
                        return this.fail(Error::HttpResponseBodySize(Some(this.max)));
                    }
                }
                if let Some((pause, timer)) = &mut this.between_bytes {
                    timer.as_mut().reset(Instant::now() + *pause);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let error = super::client::response_error(e);
                this.fail(error)
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return this.fail(Error::HttpResponseTimeout);
                }
                if let Some((_, timer)) = &mut this.between_bytes
                    && timer.as_mut().poll(cx).is_ready()
                {
                    return this.fail(Error::ConnectionReadTimeout);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn wasi_body(chunks: &[&'static [u8]]) -> WasiBody {
        let frames: Vec<Result<Frame<Bytes>, Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn request_body_within_the_cap_passes() {
        let body = RequestBody::new(wasi_body(&[b"abc", b"def"]), 6);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcdef");
    }

    #[tokio::test]
    async fn request_body_over_the_cap_fails() {
        let body = RequestBody::new(wasi_body(&[b"abc", b"def"]), 5);
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, Error::HttpRequestBodySize(Some(5))), "{err}");
    }

    #[test]
    fn request_counter_stops_at_the_maximum() {
        let counters = EgressCounters::default();
        assert!(counters.start_request(2));
        assert!(counters.start_request(2));
        assert!(!counters.start_request(2));
        assert_eq!(counters.requests(), 2);
    }

    #[tokio::test]
    async fn counted_stream_counts_both_directions() {
        let counters = Arc::new(EgressCounters::default());
        let (client, mut server) = tokio::io::duplex(64);
        let mut counted = Counted::new(client, counters.clone());
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        counted.write_all(b"hello").await.unwrap();
        server.write_all(b"worlds!").await.unwrap();
        let mut buf = [0u8; 7];
        counted.read_exact(&mut buf).await.unwrap();
        assert_eq!((counters.bytes_out(), counters.bytes_in()), (5, 7));
    }

    /// A hyper-typed body that yields one chunk and then never ends.
    struct Stalled(Option<Bytes>);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = hyper::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            match self.0.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn response_body_stops_at_the_cap_and_the_timeouts() {
        let far = Instant::now() + Duration::from_secs(30);
        let body = ResponseBody::new(
            Stalled(Some(Bytes::from_static(b"0123456789"))),
            4,
            None,
            far,
        );
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, Error::HttpResponseBodySize(Some(4))), "{err}");

        let started = Instant::now();
        let body = ResponseBody::new(
            Stalled(Some(Bytes::from_static(b"ok"))),
            100,
            Some(Duration::from_millis(50)),
            far,
        );
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, Error::ConnectionReadTimeout), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let body = ResponseBody::new(
            Stalled(None),
            100,
            None,
            Instant::now() + Duration::from_millis(50),
        );
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, Error::HttpResponseTimeout), "{err}");
    }

    #[tokio::test]
    async fn response_body_within_the_cap_passes() {
        let inner = Full::new(Bytes::from_static(b"abc"))
            .map_err(|never: std::convert::Infallible| -> hyper::Error { match never {} });
        let far = Instant::now() + Duration::from_secs(30);
        let body = ResponseBody::new(inner, 3, Some(Duration::from_secs(1)), far);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abc");
    }
}
