//! The `wasi:http/incoming-handler` export behind [`export_handler!`](crate::export_handler):
//! reads the incoming request, calls the handler, sends its status and headers, then
//! writes its body (at once, or through its producer for a streaming response).

use crate::bindings::handler::wasi::http::types::{
    ErrorCode, Fields, HeaderError, IncomingRequest, Method as WasiMethod, OutgoingBody,
    OutgoingResponse, ResponseOutparam,
};
use crate::body;
use crate::http::reader::read_whole;
use crate::http::response::PendingBody;
use crate::http::{BodyReader, BodyWriter, Method, Request, Response};

/// The largest request body the SDK reads (16 MiB); a larger body is answered with 413
/// before the handler runs. The platform applies its own, usually smaller, limit (the
/// manifest's `limits.max_request_bytes`, capped by the operator) before the request
/// reaches the component.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Serves one incoming request with `handler`, the body read whole.
pub fn serve(
    incoming: IncomingRequest,
    response_out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let response = match open_request(incoming) {
        Ok((request, body)) => match read_whole(&request, body, MAX_REQUEST_BODY_BYTES) {
            Ok(bytes) => handler(request.with_body(bytes)),
            Err(refusal) => refusal,
        },
        Err(refusal) => refusal,
    };
    send_response(response_out, response);
}

/// Serves one incoming request with `handler`, the body left to it as a stream.
pub fn serve_streaming(
    incoming: IncomingRequest,
    response_out: ResponseOutparam,
    handler: impl FnOnce(Request, BodyReader) -> Response,
) {
    let response = match open_request(incoming) {
        Ok((request, body)) => handler(request, body),
        Err(refusal) => refusal,
    };
    send_response(response_out, response);
}

/// The request's method, path and headers, and its body still unread.
fn open_request(incoming: IncomingRequest) -> Result<(Request, BodyReader), Response> {
    let method = match incoming.method() {
        WasiMethod::Get => Method::Get,
        WasiMethod::Head => Method::Head,
        WasiMethod::Post => Method::Post,
        WasiMethod::Put => Method::Put,
        WasiMethod::Delete => Method::Delete,
        WasiMethod::Connect => Method::Connect,
        WasiMethod::Options => Method::Options,
        WasiMethod::Trace => Method::Trace,
        WasiMethod::Patch => Method::Patch,
        WasiMethod::Other(other) => Method::Other(other),
    };
    let path_and_query = incoming.path_with_query().unwrap_or_default();
    let mut request = Request::new(method, &path_and_query);
    for (name, value) in incoming.headers().entries() {
        request = request.with_header(&name, value);
    }
    let body = BodyReader::incoming(incoming).ok_or_else(|| {
        Response::error_json(
            500,
            "request_body_unavailable",
            Some("the request body could not be opened"),
        )
    })?;
    Ok((request, body))
}

fn send_response(response_out: ResponseOutparam, response: Response) {
    let prepared = match prepare(response) {
        Ok(prepared) => Ok(prepared),
        Err(fallback) => prepare(fallback).map_err(|fallback| {
            ErrorCode::InternalError(Some(format!(
                "the response could not be built (status {})",
                fallback.status()
            )))
        }),
    };
    let (outgoing, outgoing_body, body) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            ResponseOutparam::set(response_out, Err(error));
            return;
        }
    };
    // The head goes out first, so the caller has the status and headers before any of a
    // streaming body is produced.
    ResponseOutparam::set(response_out, Ok(outgoing));
    match body {
        PendingBody::Buffered(bytes) => {
            // A failure here means the caller went away; there is no one left to tell.
            let _ = body::write_all(outgoing_body, &bytes);
        }
        PendingBody::Streaming(producer) => stream_body(outgoing_body, producer),
    }
}

/// Runs a streaming body's producer against the response body stream. The body is
/// finished only when the producer completes without a failed write; otherwise it is
/// dropped unfinished, which tells the host that the body is incomplete.
fn stream_body(
    outgoing_body: OutgoingBody,
    producer: impl FnOnce(&mut BodyWriter) -> Result<(), crate::http::StreamClosed>,
) {
    let Ok(stream) = outgoing_body.write() else {
        return;
    };
    let mut writer = BodyWriter::wasi(stream);
    let completed = producer(&mut writer).is_ok() && !writer.is_closed();
    // The stream must be gone before its body is finished.
    drop(writer);
    if completed {
        let _ = OutgoingBody::finish(outgoing_body, None);
    }
}

/// Builds the outgoing response; on a header or status the host refuses, returns a 500
/// response that says which.
fn prepare(response: Response) -> Result<(OutgoingResponse, OutgoingBody, PendingBody), Response> {
    let (status, headers, body) = response.into_outgoing();
    let fields = Fields::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if let Err(error) = fields.append(&name, value.as_bytes()) {
            let reason = match error {
                HeaderError::InvalidSyntax => "is not a valid header",
                HeaderError::Forbidden => "is not allowed in a response",
                HeaderError::Immutable => "could not be set",
            };
            return Err(Response::error_json(
                500,
                "invalid_response_header",
                Some(&format!("the response header `{name}` {reason}")),
            ));
        }
    }
    let outgoing = OutgoingResponse::new(fields);
    if outgoing.set_status_code(status).is_err() {
        return Err(Response::error_json(
            500,
            "invalid_response_status",
            Some(&format!(
                "the response status {status} is not a valid HTTP status"
            )),
        ));
    }
    let outgoing_body = outgoing.body().map_err(|()| {
        Response::error_json(
            500,
            "response_body_unavailable",
            Some("the response body could not be opened"),
        )
    })?;
    Ok((outgoing, outgoing_body, body))
}

/// Exports a handler function as the component's `wasi:http/incoming-handler`.
///
/// The argument is a path to a `fn(Request) -> Response` (or a closure that captures
/// nothing). For each call the SDK reads the whole request body (refusing bodies over
/// [`MAX_REQUEST_BODY_BYTES`] with 413 before the handler runs), calls the handler and
/// sends its status and headers, then its body: at once, or chunk by chunk for a
/// [streaming response](crate::http::Response::stream). A panic in the handler traps the
/// instance, which the platform answers with a 500. To read the request body as a stream,
/// use [`export_streaming_handler!`](crate::export_streaming_handler) instead.
///
/// Use it exactly once, in the component's crate (`crate-type = ["cdylib"]`):
///
/// ```
/// use palisade_sdk::http::{Request, Response, Router};
///
/// fn handle(request: Request) -> Response {
///     Router::new()
///         .get("/ping", |_| Response::text(200, "pong"))
///         .handle(request)
/// }
///
/// palisade_sdk::export_handler!(handle);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:expr $(,)?) => {
        $crate::__palisade_export!(serve, $handler);
    };
}

/// Exports a streaming handler as the component's `wasi:http/incoming-handler`: like
/// [`export_handler!`], but the request body is not read in advance.
///
/// The argument is a path to a `fn(Request, BodyReader) -> Response` (or a closure that
/// captures nothing). The [`Request`] carries the method, path and headers, with an empty
/// body; the [`BodyReader`](crate::http::BodyReader) reads the body as it arrives. No SDK
/// size limit applies to it (the platform's does). With a [`Router`](crate::http::Router),
/// dispatch with [`Router::handle_streaming`](crate::http::Router::handle_streaming): its
/// streaming routes get the reader, and its other routes get the body read whole as under
/// `export_handler!`.
///
/// Use it instead of `export_handler!`, exactly once, in the component's crate:
///
/// ```
/// use std::io::Read;
/// use palisade_sdk::http::{BodyReader, Request, Response};
///
/// fn handle(_request: Request, mut body: BodyReader) -> Response {
///     let mut first = [0u8; 4];
///     match body.read(&mut first) {
///         Ok(read) => Response::new(200).with_body(first[..read].to_vec()),
///         Err(error) => Response::bad_request(error.to_string()),
///     }
/// }
///
/// palisade_sdk::export_streaming_handler!(handle);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_streaming_handler {
    ($handler:expr $(,)?) => {
        $crate::__palisade_export!(serve_streaming, $handler);
    };
}

/// The export behind [`export_handler!`] and [`export_streaming_handler!`]: `serve` is the
/// `__private` function that reads the request and calls the handler.
#[doc(hidden)]
#[macro_export]
macro_rules! __palisade_export {
    ($serve:ident, $handler:expr) => {
        const _: () = {
            struct PalisadeIncomingHandler;

            impl $crate::__private::IncomingHandler for PalisadeIncomingHandler {
                fn handle(
                    request: $crate::__private::IncomingRequest,
                    response_out: $crate::__private::ResponseOutparam,
                ) {
                    $crate::__private::$serve(request, response_out, $handler);
                }
            }

            $crate::__private::handler::__palisade_export_incoming_handler!(
                PalisadeIncomingHandler with_types_in $crate::__private::handler
            );
        };
    };
}
