//! The `wasi:http/incoming-handler` export behind [`export_handler!`](crate::export_handler):
//! reads the incoming request, calls the handler, writes its response.

use crate::bindings::handler::wasi::http::types::{
    ErrorCode, Fields, HeaderError, IncomingRequest, Method as WasiMethod, OutgoingBody,
    OutgoingResponse, ResponseOutparam,
};
use crate::body::{self, ReadError};
use crate::http::{Method, Request, Response};

/// The largest request body the SDK reads (16 MiB); a larger body is answered with 413
/// before the handler runs. The platform applies its own, usually smaller, limit (the
/// manifest's `limits.max_request_bytes`, capped by the operator) before the request
/// reaches the component.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Serves one incoming request with `handler`.
pub fn serve(
    incoming: IncomingRequest,
    response_out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let response = match read_request(&incoming) {
        Ok(request) => handler(request),
        Err(refusal) => refusal,
    };
    drop(incoming);
    send_response(response_out, response);
}

fn read_request(incoming: &IncomingRequest) -> Result<Request, Response> {
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
    let declared_length = request
        .header("content-length")
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > MAX_REQUEST_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = read_body(incoming)?;
    Ok(request.with_body(body))
}

fn read_body(incoming: &IncomingRequest) -> Result<Vec<u8>, Response> {
    let unavailable = || {
        Response::error_json(
            500,
            "request_body_unavailable",
            Some("the request body could not be opened"),
        )
    };
    let incoming_body = incoming.consume().map_err(|()| unavailable())?;
    body::read_all(incoming_body, MAX_REQUEST_BODY_BYTES).map_err(|error| match error {
        ReadError::TooLarge => too_large(),
        ReadError::Unavailable => unavailable(),
        ReadError::Failed(message) => {
            Response::bad_request(format!("the request body could not be read: {message}"))
        }
    })
}

fn too_large() -> Response {
    Response::error_json(
        413,
        "payload_too_large",
        Some(&format!(
            "the request body exceeds {MAX_REQUEST_BODY_BYTES} bytes"
        )),
    )
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
    let (outgoing, outgoing_body, bytes) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            ResponseOutparam::set(response_out, Err(error));
            return;
        }
    };
    ResponseOutparam::set(response_out, Ok(outgoing));
    // A failure here means the caller went away; there is no one left to tell.
    let _ = body::write_all(outgoing_body, &bytes);
}

/// Builds the outgoing response; on a header or status the host refuses, returns a 500
/// response that says which.
fn prepare(response: Response) -> Result<(OutgoingResponse, OutgoingBody, Vec<u8>), Response> {
    let (status, headers, body) = response.into_parts();
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
/// writes its status, headers and body. A panic in the handler traps the instance, which
/// the platform answers with a 500.
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
        const _: () = {
            struct PalisadeIncomingHandler;

            impl $crate::__private::IncomingHandler for PalisadeIncomingHandler {
                fn handle(
                    request: $crate::__private::IncomingRequest,
                    response_out: $crate::__private::ResponseOutparam,
                ) {
                    $crate::__private::serve(request, response_out, $handler);
                }
            }

            $crate::__private::handler::__palisade_export_incoming_handler!(
                PalisadeIncomingHandler with_types_in $crate::__private::handler
            );
        };
    };
}
