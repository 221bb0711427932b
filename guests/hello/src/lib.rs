//! Sample Palisade extension: `GET /hello/:name` answers with a greeting, the ids of the
//! tenant, extension and version it runs for, and the calling user; it logs one line with
//! the name.
//! `GET /hello/:name/stream?lines=N&interval_ms=M` streams N greeting lines, M ms apart,
//! each sent as soon as it is written.

use std::time::Duration;

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::{context, log, time};
use serde::Serialize;

/// Lines streamed by `GET /hello/:name/stream` unless `lines` says otherwise.
const DEFAULT_LINES: u32 = 5;
/// The most lines one stream sends. With [`MAX_INTERVAL_MS`], a stream ends within 4 s,
/// inside the manifest's 5 s deadline (past it the platform cuts the body).
const MAX_LINES: u32 = 40;
/// The pause between streamed lines unless `interval_ms` says otherwise.
const DEFAULT_INTERVAL_MS: u64 = 100;
/// The longest pause between streamed lines.
const MAX_INTERVAL_MS: u64 = 100;

/// The body of a successful `GET /hello/:name`.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Greeting {
    greeting: String,
    tenant: String,
    extension: String,
    version: String,
    /// The calling user, `null` when the caller's token names none.
    user: Option<String>,
}

fn handle(request: Request) -> Response {
    router().handle(request)
}

fn router() -> Router {
    Router::new()
        .get("/hello/:name", hello)
        .get("/hello/:name/stream", hello_stream)
}

fn hello(request: Request) -> Response {
    let Some(name) = request.param("name") else {
        return Response::bad_request("the path parameter `name` is missing");
    };
    log::write(log::Level::Info, "greeting", &[("name", name)]);
    let invocation = context::get();
    Response::json(200, &greeting(name, &invocation))
}

fn hello_stream(request: Request) -> Response {
    let Some(name) = request.param("name") else {
        return Response::bad_request("the path parameter `name` is missing");
    };
    let plan = match StreamPlan::from_request(&request) {
        Ok(plan) => plan,
        Err(refusal) => return refusal,
    };
    let lines = plan.lines.to_string();
    log::write(
        log::Level::Info,
        "streaming greeting",
        &[("name", name), ("lines", &lines)],
    );
    greeting_stream(name.to_owned(), plan)
}

/// How many lines to stream and how far apart, from the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamPlan {
    lines: u32,
    interval: Duration,
}

impl StreamPlan {
    /// `lines` (default 5, at most 40) and `interval_ms` (default 100, at most 100);
    /// larger values are capped, values that are not whole numbers are a 400.
    fn from_request(request: &Request) -> Result<StreamPlan, Response> {
        let lines =
            query_number(request, "lines", u64::from(DEFAULT_LINES))?.min(u64::from(MAX_LINES));
        let interval_ms =
            query_number(request, "interval_ms", DEFAULT_INTERVAL_MS)?.min(MAX_INTERVAL_MS);
        Ok(StreamPlan {
            lines: u32::try_from(lines).unwrap_or(MAX_LINES),
            interval: Duration::from_millis(interval_ms),
        })
    }
}

fn query_number(request: &Request, name: &str, default: u64) -> Result<u64, Response> {
    match request.query_param(name) {
        None => Ok(default),
        // A value too large for u64 is as capped as any other large value.
        Some(value) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(value.parse().unwrap_or(u64::MAX))
        }
        Some(value) => Err(Response::bad_request(format!(
            "the query parameter `{name}` must be a whole number, not `{value}`"
        ))),
    }
}

/// A plain-text response that writes one line per step of `plan`, pausing for the
/// interval between lines. The status and headers leave at once; each line leaves as it is
/// written. If the caller goes away, the next write fails and the stream stops.
fn greeting_stream(name: String, plan: StreamPlan) -> Response {
    Response::stream(200, move |writer| {
        for line in 1..=plan.lines {
            if line > 1 {
                time::sleep(plan.interval);
            }
            writeln!(writer, "Hello, {name}! ({line}/{})", plan.lines)?;
        }
        Ok(())
    })
    .with_header("content-type", "text/plain; charset=utf-8")
    .with_header("cache-control", "no-store")
}

fn greeting(name: &str, invocation: &context::Invocation) -> Greeting {
    Greeting {
        greeting: format!("Hello, {name}!"),
        tenant: invocation.tenant_id.clone(),
        extension: invocation.extension_id.clone(),
        version: invocation.version.clone(),
        user: invocation.user.clone(),
    }
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::http::Method;

    fn invocation() -> context::Invocation {
        context::Invocation {
            request_id: "req-1".into(),
            tenant_id: "tenant-a".into(),
            extension_id: "com.example.hello".into(),
            install_id: "install-1".into(),
            version_id: "version-1".into(),
            version: "0.1.0".into(),
            content_hash: "sha256:00".into(),
            trigger: "http".into(),
            user: Some("ada@example.com".into()),
        }
    }

    #[test]
    fn greeting_carries_the_invocation_ids() {
        assert_eq!(
            greeting("Ada", &invocation()),
            Greeting {
                greeting: "Hello, Ada!".into(),
                tenant: "tenant-a".into(),
                extension: "com.example.hello".into(),
                version: "0.1.0".into(),
                user: Some("ada@example.com".into()),
            }
        );
    }

    fn plan(path_and_query: &str) -> Result<StreamPlan, u16> {
        StreamPlan::from_request(&Request::new(Method::Get, path_and_query))
            .map_err(|refusal| refusal.status())
    }

    #[test]
    fn stream_plan_has_defaults_and_caps() {
        let default_interval = Duration::from_millis(DEFAULT_INTERVAL_MS);
        assert_eq!(
            plan("/hello/a/stream"),
            Ok(StreamPlan {
                lines: DEFAULT_LINES,
                interval: default_interval,
            })
        );
        assert_eq!(
            plan("/hello/a/stream?lines=3&interval_ms=0"),
            Ok(StreamPlan {
                lines: 3,
                interval: Duration::ZERO,
            })
        );
        assert_eq!(
            plan("/hello/a/stream?lines=1001&interval_ms=99999999999999999999999"),
            Ok(StreamPlan {
                lines: MAX_LINES,
                interval: Duration::from_millis(MAX_INTERVAL_MS),
            })
        );
        assert_eq!(plan("/hello/a/stream?lines=-1"), Err(400));
        assert_eq!(plan("/hello/a/stream?lines="), Err(400));
        assert_eq!(plan("/hello/a/stream?interval_ms=1.5"), Err(400));
    }

    #[test]
    fn stream_writes_one_line_per_step() {
        let response = greeting_stream(
            "Ada".into(),
            StreamPlan {
                lines: 3,
                interval: Duration::ZERO,
            },
        );
        assert_eq!(response.status(), 200);
        assert!(response.is_streaming());
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            String::from_utf8(response.into_body_bytes()).unwrap(),
            "Hello, Ada! (1/3)\nHello, Ada! (2/3)\nHello, Ada! (3/3)\n"
        );
        let empty = greeting_stream(
            "Ada".into(),
            StreamPlan {
                lines: 0,
                interval: Duration::from_secs(1),
            },
        );
        assert!(empty.into_body_bytes().is_empty());
    }

    #[test]
    fn stream_refuses_a_bad_query_before_streaming() {
        let response = router().handle(Request::new(Method::Get, "/hello/ada/stream?lines=many"));
        assert_eq!(response.status(), 400);
        assert!(!response.is_streaming());
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let router = router();
        assert_eq!(
            router.handle(Request::new(Method::Get, "/bye/x")).status(),
            404
        );
        assert_eq!(
            router.handle(Request::new(Method::Get, "/hello/")).status(),
            404
        );
        assert_eq!(
            router
                .handle(Request::new(Method::Post, "/hello/x"))
                .status(),
            405
        );
        assert_eq!(
            router
                .handle(Request::new(Method::Post, "/hello/x/stream"))
                .status(),
            405
        );
        assert_eq!(
            router
                .handle(Request::new(Method::Get, "/hello/x/stream/more"))
                .status(),
            404
        );
    }
}
