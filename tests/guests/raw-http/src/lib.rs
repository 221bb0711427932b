//! A guest written against `wasi:http` directly, for what the SDK would never do: stream a
//! response body without end (`/endless`), or set response headers far past any sane size
//! (`/huge-headers`). Anything else answers 200 `ok`.

#![allow(unsafe_code, missing_docs, clippy::all)]

wit_bindgen::generate!({
    path: "../../../wit",
    world: "palisade:extension/handler",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct RawHttp;

impl Guest for RawHttp {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match path.as_str() {
            "/endless" => endless(out),
            "/huge-headers" => huge_headers(out),
            _ => respond(out, Fields::new(), b"ok"),
        }
    }
}

fn respond(out: ResponseOutparam, headers: Fields, body: &[u8]) {
    let response = OutgoingResponse::new(headers);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        let _ = stream.blocking_write_and_flush(body);
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Writes 64 KiB chunks until the host stops taking them.
fn endless(out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = outgoing.write() else { return };
    let chunk = vec![b'x'; 4096];
    loop {
        if stream.blocking_write_and_flush(&chunk).is_err() {
            // The host closed the body: keep burning time instead of returning cleanly.
            loop {
                std::hint::black_box(0u64);
            }
        }
    }
}

/// Appends header values until the host refuses one, then answers with what it has.
fn huge_headers(out: ResponseOutparam) {
    let headers = Fields::new();
    let value = vec![b'v'; 8192];
    let mut appended = 0u32;
    for i in 0..10_000 {
        if headers.append(&format!("x-ext-h{i}"), &value).is_err() {
            break;
        }
        appended += 1;
    }
    respond(out, headers, appended.to_string().as_bytes());
}

export!(RawHttp);
