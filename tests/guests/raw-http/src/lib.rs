//! A guest written against `wasi:http` directly, for what the SDK would never do: stream a
//! response body without end (`/endless`), or set response headers far past any sane size
//! (`/huge-headers`); and for what the execute hop must carry as it is: lines written
//! apart in time (`/lines?n=&ms=`), a large download (`/download?mib=`), a large upload read
//! as a stream (`/upload`), its own request and response headers (`/headers?status=`), and
//! a flood of stdout and stderr lines (`/print?lines=`).
//! Anything else answers 200 `ok`.

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
        let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        let param = |name: &str, default: u64| -> u64 {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(default)
        };
        match route {
            "/endless" => endless(out),
            "/huge-headers" => huge_headers(out),
            "/lines" => lines(out, param("n", 5), param("ms", 100)),
            "/download" => download(out, param("mib", 1)),
            "/upload" => upload(request, out),
            "/headers" => headers(request, out, param("status", 200) as u16),
            "/print" => print(out, param("lines", 1000)),
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

/// Writes `n` lines, `ms` milliseconds apart, flushing each.
fn lines(out: ResponseOutparam, n: u64, ms: u64) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"text/plain");
    let response = OutgoingResponse::new(headers);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = outgoing.write() else { return };
    for i in 0..n {
        if i > 0 {
            wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        if stream
            .blocking_write_and_flush(format!("line {i}\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Writes `lines` lines to stdout and as many to stderr, one write each, then answers
/// `printed`.
fn print(out: ResponseOutparam, lines: u64) {
    for i in 0..lines {
        println!("stdout line {i} of a guest that writes a great deal to its output");
        eprintln!("stderr line {i} of a guest that writes a great deal to its output");
    }
    respond(out, Fields::new(), b"printed");
}

/// Writes `mib` MiB of `x`, with a `content-length`.
fn download(out: ResponseOutparam, mib: u64) {
    let headers = Fields::new();
    let _ = headers.append("content-length", (mib << 20).to_string().as_bytes());
    let response = OutgoingResponse::new(headers);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = outgoing.write() else { return };
    let chunk = vec![b'x'; 4096];
    for _ in 0..(mib << 20) / 4096 {
        if stream.blocking_write_and_flush(&chunk).is_err() {
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Reads the request body as a stream and answers how many bytes it had and their sum.
fn upload(request: IncomingRequest, out: ResponseOutparam) {
    let Ok(body) = request.consume() else {
        return respond(out, Fields::new(), b"no body");
    };
    let Ok(stream) = body.stream() else {
        return respond(out, Fields::new(), b"no stream");
    };
    let (mut bytes, mut sum) = (0u64, 0u64);
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                bytes += chunk.len() as u64;
                sum = chunk.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
            }
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(_) => return respond(out, Fields::new(), b"read failed"),
        }
    }
    respond(
        out,
        Fields::new(),
        format!("{{\"bytes\":{bytes},\"sum\":{sum}}}").as_bytes(),
    );
}

/// Answers `status` with the request headers it saw, one `name: value` per line, and sets
/// headers of its own: declared, undeclared and `location`.
fn headers(request: IncomingRequest, out: ResponseOutparam, status: u16) {
    let mut seen = String::new();
    for (name, value) in request.headers().entries() {
        seen.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
    }
    let headers = Fields::new();
    let _ = headers.append("x-response-extra", b"declared");
    let _ = headers.append("x-undeclared", b"dropped");
    let _ = headers.append("location", b"/elsewhere");
    let _ = headers.append("content-disposition", b"attachment; filename=\"seen.txt\"");
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in seen.as_bytes().chunks(4096) {
            let _ = stream.blocking_write_and_flush(chunk);
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
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
