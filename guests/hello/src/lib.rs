//! Sample Palisade extension: `GET /hello/:name` answers with a greeting and the ids of
//! the tenant, extension and version it runs for, and logs one line with the name.

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::{context, log};
use serde::Serialize;

/// The body of a successful `GET /hello/:name`.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Greeting {
    greeting: String,
    tenant: String,
    extension: String,
    version: String,
}

fn handle(request: Request) -> Response {
    router().handle(request)
}

fn router() -> Router {
    Router::new().get("/hello/:name", hello)
}

fn hello(request: Request) -> Response {
    let Some(name) = request.param("name") else {
        return Response::bad_request("the path parameter `name` is missing");
    };
    log::write(log::Level::Info, "greeting", &[("name", name)]);
    let invocation = context::get();
    Response::json(200, &greeting(name, &invocation))
}

fn greeting(name: &str, invocation: &context::Invocation) -> Greeting {
    Greeting {
        greeting: format!("Hello, {name}!"),
        tenant: invocation.tenant_id.clone(),
        extension: invocation.extension_id.clone(),
        version: invocation.version.clone(),
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
            }
        );
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
    }
}
