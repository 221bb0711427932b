//! A guest's answer on its way from the runner to the caller: the body passes through as
//! it arrives (with backpressure: a chunk is read from the runner only when the caller's
//! connection takes the previous one), and the hop's trailers say how it ended. A body the
//! runner cut — over its limit, past its deadline, or the guest failed — is aborted towards
//! the caller, so that it cannot be taken for a whole one.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use palisade_protocol::hop;
use palisade_protocol::{BodyOutcome, ErrorCode, ExecuteStats};

/// How a relayed body ended, for the execution log.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// `None` while the body is running, or when the caller went away before its end.
    pub(crate) ending: Option<BodyOutcome>,
    /// What the call consumed, from the runner's trailer.
    pub(crate) stats: Option<ExecuteStats>,
    /// Bytes passed to the caller.
    pub(crate) bytes: u64,
}

/// Shared between the relayed body and the execution-log row it ends.
pub(crate) type SharedReport = Arc<Mutex<Report>>;

/// The runner's body, relayed.
pub(crate) struct RelayBody {
    inner: Incoming,
    report: SharedReport,
    /// The length the guest declared: the last chunk is held back until the trailers have
    /// said the body is whole, since a caller reading a declared length takes the last
    /// byte for the end.
    declared: Option<u64>,
    received: u64,
    held: Option<Bytes>,
    done: bool,
}

impl RelayBody {
    pub(crate) fn new(inner: Incoming, declared: Option<u64>, report: SharedReport) -> Self {
        RelayBody {
            inner,
            report,
            declared,
            received: 0,
            held: None,
            done: false,
        }
    }

    fn end(&mut self, ending: BodyOutcome, stats: Option<ExecuteStats>) {
        self.done = true;
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        report.ending = Some(ending);
        if stats.is_some() {
            report.stats = stats;
        }
        report.bytes = self.received;
    }

    /// The frame after the body's end: the held chunk when it is whole, the abort
    /// otherwise.
    fn after_end(&mut self) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let ending = self
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ending;
        match ending {
            Some(BodyOutcome::Cut(code)) => {
                self.held = None;
                Poll::Ready(Some(Err(axum::Error::new(format!(
                    "response body cut by the runner: {code}"
                )))))
            }
            _ => Poll::Ready(self.held.take().map(|data| Ok(Frame::data(data)))),
        }
    }
}

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return this.after_end();
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // No trailers: a body without one (HEAD, 204, 304), taken as whole.
                    this.end(BodyOutcome::Complete, None);
                }
                Poll::Ready(Some(Err(err))) => {
                    tracing::warn!(error = %err, "runner connection broke while relaying a body");
                    this.end(BodyOutcome::Cut(ErrorCode::Unavailable), None);
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.received += data.len() as u64;
                        if this.declared == Some(this.received) {
                            this.held = Some(data);
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Err(frame) => {
                        let Ok(trailers) = frame.into_trailers() else {
                            continue;
                        };
                        let ending = trailers
                            .get(hop::OUTCOME)
                            .map_or(BodyOutcome::Complete, BodyOutcome::from_header);
                        let stats = trailers
                            .get(hop::STATS)
                            .and_then(|value| ExecuteStats::from_header(value).ok());
                        this.end(ending, stats);
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(length) => SizeHint::with_exact(length),
            None => self.inner.size_hint(),
        }
    }
}
