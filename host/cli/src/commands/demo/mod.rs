//! The demo host page `palisade up --demo` serves on the gateway's address: a page that
//! stands for a host application and mounts an extension's UI with the bridge
//! (`@palisade/ui`, whose built host side is kept beside this file and checked against
//! `sdk/ui`'s build by that package's tests). For demos only: the page carries a
//! development caller token.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

const PAGE: &str = include_str!("page.html");
const HOST_JS: &str = include_str!("host.js");
const PROTOCOL_JS: &str = include_str!("protocol.js");

/// What the page mounts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MountedUi {
    /// The runners' public base for UIs.
    pub public_base: String,
    /// The gateway's base URL.
    pub gateway: String,
    pub extension_id: String,
    pub content_hash: String,
    /// The UI's entry document.
    pub entry: String,
    /// The manifest's extra sandbox permissions.
    pub sandbox: Vec<String>,
    /// A development caller token of the demo tenant.
    pub token: String,
}

/// The page's path for `extension_id`.
pub(crate) fn page_path(extension_id: &str) -> String {
    format!("/demo/{extension_id}")
}

/// The routes of the demo page of each of `uis`.
pub(crate) fn router(uis: Vec<MountedUi>) -> Router {
    let mut router = Router::new().route("/demo/bridge/{file}", get(bridge));
    for ui in uis {
        let page = render(&ui);
        router = router.route(
            &page_path(&ui.extension_id),
            get(move || {
                let page = page.clone();
                async move { Html(page) }
            }),
        );
    }
    router
}

/// The page for `ui`: its settings as JSON in a `<script type="application/json">`, with
/// `<` escaped so that no value can close the element.
fn render(ui: &MountedUi) -> String {
    let config = serde_json::to_string(ui)
        .unwrap_or_else(|_| "{}".to_owned())
        .replace('<', "\\u003c");
    PAGE.replace("__CONFIG__", &config)
}

async fn bridge(Path(file): Path<String>) -> Response {
    let body = match file.as_str() {
        "host.js" => HOST_JS,
        "protocol.js" => PROTOCOL_JS,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_its_settings_and_no_value_can_end_the_script() {
        let page = render(&MountedUi {
            public_base: "http://127.0.0.1:8081".into(),
            gateway: "http://127.0.0.1:8080".into(),
            extension_id: "com.example.ticket-widget".into(),
            content_hash: "sha256:ab".into(),
            entry: "index.html".into(),
            sandbox: Vec::new(),
            token: "</script><script>alert(1)</script>".into(),
        });
        assert!(page.contains("\"extensionId\":\"com.example.ticket-widget\""));
        assert_eq!(page.matches("</script>").count(), 2, "{page}");
        assert!(HOST_JS.contains("export function mountExtension"));
    }
}
