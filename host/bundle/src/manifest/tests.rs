use super::*;

const FULL: &str = r#"{"id":"com.example.hello","name":"Hello","publisher":"Example Inc.","version":"0.1.0",
 "runtime":"wasi-http@0.2","component":"hello.wasm",
 "capabilities":{"log":true,"metrics":false,"storage":{"namespaces":["notes"],"max_bytes":1048576},
   "secrets":["GITHUB_TOKEN"],"http":{"allow":["https://api.github.com","https://*.example.com:8443"]}},
 "api":{"endpoints":[{"method":"GET","path":"/hello/:name"}]},
 "ui":{"entry":"index.html","hooks":["settings"]},
 "events":[{"topic":"order.created","path":"/events/order"}],
 "schedules":[{"cron":"0 * * * *","path":"/tasks/hourly"}],
 "limits":{"timeout_ms":5000,"memory_mb":64,"fuel":null,"max_request_bytes":1048576,"max_response_bytes":4194304}}"#;

const MINIMAL: &str = r#"{"id":"com.example.min","name":"Min","publisher":"Me",
 "version":"1.2.3-beta.1","runtime":"wasi-http@0.2","component":"bin/min.wasm"}"#;

fn full() -> serde_json::Value {
    serde_json::from_str(FULL).unwrap()
}

/// Parses `value` and returns the error it must produce.
fn error_of(value: &serde_json::Value) -> ManifestError {
    Manifest::from_json(value.to_string().as_bytes()).unwrap_err()
}

/// Applies `edit` to the full example and returns the error path.
fn path_of(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value = full();
    edit(&mut value);
    error_of(&value).path
}

#[test]
fn parses_the_full_example() {
    let m = Manifest::from_json(FULL.as_bytes()).unwrap();
    assert_eq!(m.id, "com.example.hello");
    assert_eq!(m.version, semver::Version::new(0, 1, 0));
    assert_eq!(
        m.capabilities.storage.as_ref().unwrap().namespaces,
        ["notes"]
    );
    assert_eq!(m.capabilities.http.as_ref().unwrap().allow.len(), 2);
    assert_eq!(m.api.endpoints[0].path, "/hello/:name");
    assert_eq!(m.ui.as_ref().unwrap().hooks, ["settings"]);
    assert_eq!(m.events[0].topic, "order.created");
    assert_eq!(m.schedules[0].cron, "0 * * * *");
    assert_eq!(m.limits.timeout_ms, 5000);
    assert_eq!(m.limits.fuel, None);
}

#[test]
fn optional_sections_have_defaults() {
    let m = Manifest::from_json(MINIMAL.as_bytes()).unwrap();
    assert!(m.capabilities.log);
    assert!(!m.capabilities.metrics);
    assert_eq!(m.capabilities.keys(), [CapabilityKey::Log]);
    assert!(m.api.endpoints.is_empty());
    assert!(m.ui.is_none() && m.events.is_empty() && m.schedules.is_empty());
    assert_eq!(m.limits, Limits::default());
    assert_eq!(m.limits.timeout_ms, 10_000);
    assert_eq!(m.limits.memory_mb, 64);
    assert_eq!(m.limits.max_request_bytes, 1 << 20);
    assert_eq!(m.limits.max_response_bytes, 4 << 20);

    let mut value: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    value["capabilities"] = serde_json::json!({"metrics": true});
    value["limits"] = serde_json::json!({"fuel": 1000});
    let m = Manifest::from_json(value.to_string().as_bytes()).unwrap();
    assert!(m.capabilities.log, "log stays on when omitted");
    assert_eq!(m.limits.fuel, Some(1000));
    assert_eq!(m.limits.timeout_ms, 10_000);
}

#[test]
fn roundtrips_through_json() {
    let m = Manifest::from_json(FULL.as_bytes()).unwrap();
    assert_eq!(Manifest::from_json(&m.to_json_pretty()).unwrap(), m);
}

#[test]
fn unknown_fields_name_their_path() {
    let err = error_of(&{
        let mut v = full();
        v["capabilities"]["storage"]["namespacez"] = serde_json::json!([]);
        v
    });
    assert_eq!(err.path, "capabilities.storage.namespacez");
    assert!(err.message.contains("unknown field"), "{err}");
    assert!(
        err.to_string()
            .starts_with("manifest field `capabilities.storage.namespacez`: unknown field")
    );

    assert_eq!(path_of(|v| v["extra"] = 1.into()), "extra");
    assert_eq!(path_of(|v| v["limits"]["cpu"] = 1.into()), "limits.cpu");
    assert_eq!(
        path_of(|v| v["api"]["endpoints"][0]["auth"] = true.into()),
        "api.endpoints[0].auth"
    );
    assert_eq!(path_of(|v| v["ui"]["css"] = "x".into()), "ui.css");
    assert_eq!(
        path_of(|v| v["capabilities"]["sockets"] = true.into()),
        "capabilities.sockets"
    );
}

#[test]
fn type_errors_and_missing_fields_name_their_path() {
    assert_eq!(
        path_of(|v| v["limits"]["timeout_ms"] = "soon".into()),
        "limits.timeout_ms"
    );
    assert_eq!(
        path_of(|v| v["capabilities"]["log"] = "yes".into()),
        "capabilities.log"
    );
    let err = error_of(&{
        let mut v = full();
        v.as_object_mut().unwrap().remove("publisher");
        v
    });
    assert_eq!(err.path, "publisher");
    assert!(err.message.starts_with("missing field"), "{err}");
    assert_eq!(
        path_of(|v| {
            v["capabilities"]["storage"]
                .as_object_mut()
                .unwrap()
                .remove("namespaces");
        }),
        "capabilities.storage.namespaces"
    );
}

#[test]
fn document_level_errors_have_no_path() {
    let err = Manifest::from_json(b"not json").unwrap_err();
    assert_eq!(err.path, "");
    assert!(err.to_string().starts_with("manifest: "), "{err}");
    let err = Manifest::from_json(format!("{MINIMAL} {{}}").as_bytes()).unwrap_err();
    assert!(err.message.contains("trailing"), "{err}");
}

#[test]
fn version_must_be_semver() {
    let err = error_of(&{
        let mut v = full();
        v["version"] = "1.0".into();
        v
    });
    assert_eq!(err.path, "version");
}

#[test]
fn validation_names_the_field() {
    use serde_json::json;
    let long_id = format!("com.{}", "a".repeat(130));
    // (expected error path, JSON pointer into the full example, replacement value)
    let cases = [
        ("id", "/id", json!("Com.Example")),
        ("id", "/id", json!("hello")),
        ("id", "/id", json!(long_id)),
        ("name", "/name", json!(" ")),
        ("publisher", "/publisher", json!("")),
        ("runtime", "/runtime", json!("wasi-http@0.3")),
        ("component", "/component", json!("../hello.wasm")),
        ("component", "/component", json!("/hello.wasm")),
        ("component", "/component", json!("hello.so")),
        ("component", "/component", json!("ui/hello.wasm")),
        (
            "capabilities.storage.namespaces",
            "/capabilities/storage/namespaces",
            json!([]),
        ),
        (
            "capabilities.storage.namespaces[1]",
            "/capabilities/storage/namespaces",
            json!(["a", "B"]),
        ),
        (
            "capabilities.storage.namespaces[1]",
            "/capabilities/storage/namespaces",
            json!(["a", "a"]),
        ),
        (
            "capabilities.storage.namespaces[0]",
            "/capabilities/storage/namespaces",
            json!([""]),
        ),
        (
            "capabilities.storage.max_bytes",
            "/capabilities/storage/max_bytes",
            json!(0),
        ),
        (
            "capabilities.secrets[0]",
            "/capabilities/secrets",
            json!(["1ABC"]),
        ),
        (
            "capabilities.secrets[1]",
            "/capabilities/secrets",
            json!(["A", "A"]),
        ),
        (
            "capabilities.http.allow",
            "/capabilities/http/allow",
            json!([]),
        ),
        (
            "capabilities.http.allow[1]",
            "/capabilities/http/allow/1",
            json!("https://example.com/path"),
        ),
        (
            "capabilities.http.allow[1]",
            "/capabilities/http/allow/1",
            json!("https://api.github.com:443"),
        ),
        (
            "api.endpoints[0].method",
            "/api/endpoints/0/method",
            json!("get"),
        ),
        (
            "api.endpoints[0].method",
            "/api/endpoints/0/method",
            json!("TRACE"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("hello"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a/:1x"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a/:x/:x"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a//b"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a/"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a/../b"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a?b"),
        ),
        (
            "api.endpoints[1]",
            "/api/endpoints",
            json!([{"method": "GET", "path": "/a/:x"}, {"method": "GET", "path": "/a/:y"}]),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a/*rest/b"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/*rest/*more"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a/*"),
        ),
        (
            "api.endpoints[0].path",
            "/api/endpoints/0/path",
            json!("/a/:x/*x"),
        ),
        (
            "api.endpoints[0].method",
            "/api/endpoints/0/method",
            json!("**"),
        ),
        (
            "api.endpoints[1]",
            "/api/endpoints",
            json!([{"method": "*", "path": "/a/*x"}, {"method": "*", "path": "/a/*y"}]),
        ),
        ("ui.entry", "/ui/entry", json!("../secret")),
        ("ui.hooks[0]", "/ui/hooks", json!(["Bad Hook"])),
        ("events[0].topic", "/events/0/topic", json!("")),
        (
            "events[1].topic",
            "/events",
            json!([{"topic": "t", "path": "/a"}, {"topic": "t", "path": "/b"}]),
        ),
        ("events[0].path", "/events/0/path", json!("/events/:id")),
        (
            "schedules[0].cron",
            "/schedules/0/cron",
            json!("every hour"),
        ),
        ("schedules[0].path", "/schedules/0/path", json!("tasks")),
        ("limits.timeout_ms", "/limits/timeout_ms", json!(0)),
        ("limits.memory_mb", "/limits/memory_mb", json!(0)),
        ("limits.fuel", "/limits/fuel", json!(0)),
        (
            "limits.max_request_bytes",
            "/limits/max_request_bytes",
            json!(0),
        ),
        (
            "limits.max_response_bytes",
            "/limits/max_response_bytes",
            json!(0),
        ),
    ];
    for (expected, pointer, replacement) in cases {
        let mut value = full();
        *value.pointer_mut(pointer).unwrap() = replacement;
        let err = error_of(&value);
        assert_eq!(err.path, expected, "{pointer}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("manifest field `{expected}`: "))
        );
    }
}

#[test]
fn accepts_varied_valid_values() {
    let mut value = full();
    value["api"]["endpoints"] = serde_json::json!([
        {"method": "GET", "path": "/"},
        {"method": "POST", "path": "/items"},
        {"method": "GET", "path": "/items/:id"},
        {"method": "DELETE", "path": "/items/:id"},
        {"method": "PUT", "path": "/v1/items:batch"},
        {"method": "HEAD", "path": "/items/:id/raw"},
        {"method": "OPTIONS", "path": "/items"},
        {"method": "PATCH", "path": "/items/:item_id/tags/:tag"},
        {"method": "*", "path": "/items"},
        {"method": "GET", "path": "/files/*rest"},
        {"method": "*", "path": "/files/*rest"},
        {"method": "GET", "path": "/files/:dir/*rest"},
        {"method": "GET", "path": "/files/:dir"},
        {"method": "POST", "path": "/*rest"},
        {"method": "GET", "path": "/a*b/c*"},
    ]);
    value["capabilities"]["http"]["allow"] =
        serde_json::json!(["http://127.0.0.1:8080", "https://*.example.com"]);
    value["ui"] = serde_json::json!({"entry": "pages/index.html"});
    Manifest::from_json(value.to_string().as_bytes()).unwrap();
}

#[test]
fn schema_file_is_json_and_lists_the_top_level_fields() {
    let text = include_str!("../../../../docs/manifest.schema.json");
    let schema: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    let properties = schema["properties"].as_object().unwrap();
    let example = full();
    for key in example.as_object().unwrap().keys() {
        assert!(properties.contains_key(key), "schema lacks `{key}`");
    }
}

#[test]
fn the_manifest_page_names_every_capability_and_its_interfaces() {
    let page = include_str!("../../../../docs/manifest.md");
    for spec in &CAPABILITIES {
        assert!(
            page.contains(&format!("| `{}` |", spec.name)),
            "docs/manifest.md has no row for `{}`",
            spec.name
        );
        for interface in spec.interfaces {
            assert!(
                page.contains(&format!("`{interface}@")),
                "docs/manifest.md does not list the import `{interface}`"
            );
        }
    }
}

#[test]
fn sandbox_permissions_agree_with_the_schema_and_the_bridge() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../../docs/manifest.schema.json")).unwrap();
    let listed = &schema["properties"]["ui"]["properties"]["sandbox"]["items"]["enum"];
    let bridge = include_str!("../../../../sdk/ui/src/protocol.ts");
    for permission in SandboxPermission::ALL {
        let name = permission.as_str();
        assert_eq!(serde_json::to_value(permission).unwrap(), name);
        assert!(
            listed.as_array().unwrap().iter().any(|v| v == name),
            "schema lacks {name}"
        );
        assert!(
            bridge.contains(&format!("\"{name}\"")),
            "sdk/ui lacks {name}"
        );
    }
    assert_eq!(
        listed.as_array().unwrap().len(),
        SandboxPermission::ALL.len()
    );
    let mut value = full();
    value["ui"]["sandbox"] = serde_json::json!(["allow-same-origin"]);
    let err = Manifest::from_json(value.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("ui.sandbox"), "{err}");
}

#[test]
fn schema_lists_every_capability_of_the_table() {
    let text = include_str!("../../../../docs/manifest.schema.json");
    let schema: serde_json::Value = serde_json::from_str(text).unwrap();
    let properties = schema["$defs"]["capabilities"]["properties"]
        .as_object()
        .unwrap();
    let mut listed: Vec<&str> = properties.keys().map(String::as_str).collect();
    let mut names: Vec<&str> = CAPABILITIES.iter().map(|spec| spec.name).collect();
    listed.sort_unstable();
    names.sort_unstable();
    assert_eq!(listed, names, "docs/manifest.schema.json capabilities");
}

#[test]
fn endpoints_are_private_unless_declared_public() {
    let mut value = full();
    value["api"]["endpoints"] = serde_json::json!([
        {"method": "GET", "path": "/a"},
        {"method": "GET", "path": "/b", "cache": "public"},
        {"method": "GET", "path": "/c", "cache": "private"},
    ]);
    let m = Manifest::from_json(value.to_string().as_bytes()).unwrap();
    let caches: Vec<EndpointCache> = m.api.endpoints.iter().map(|e| e.cache).collect();
    assert_eq!(
        caches,
        [
            EndpointCache::Private,
            EndpointCache::Public,
            EndpointCache::Private
        ]
    );
    // The default is not written back, so stored manifests keep their form.
    let json = serde_json::to_value(&m).unwrap();
    assert!(json["api"]["endpoints"][0].get("cache").is_none());
    assert_eq!(json["api"]["endpoints"][1]["cache"], "public");

    let err = error_of(&{
        value["api"]["endpoints"][1]["cache"] = serde_json::json!("shared");
        value
    });
    assert_eq!(err.path, "api.endpoints[1].cache");
    assert!(err.to_string().contains("shared"), "{err}");
}

#[test]
fn wildcard_segments_are_last_only() {
    let mut value = full();
    value["api"]["endpoints"] = serde_json::json!([{"method": "GET", "path": "/a/*rest/b"}]);
    let err = error_of(&value);
    assert_eq!(err.path, "api.endpoints[0].path");
    assert!(err.message.contains("`*rest`"), "{err}");
    assert!(err.message.contains("last"), "{err}");
    // Outside endpoint paths `*` is an ordinary character.
    let mut value = full();
    value["events"][0]["path"] = "/events/*x".into();
    Manifest::from_json(value.to_string().as_bytes()).unwrap();
}

fn with_headers(headers: serde_json::Value) -> Result<Manifest, ManifestError> {
    let mut value = full();
    value["api"]["headers"] = headers;
    Manifest::from_json(value.to_string().as_bytes())
}

#[test]
fn declared_headers_are_stored_lower_case() {
    let m = with_headers(serde_json::json!({
        "request": ["If-Modified-Since", "x-tenant-locale", "Accept-Language"],
        "response": ["Content-Range", "x-ext-trace"],
    }))
    .unwrap();
    assert_eq!(
        m.api.headers.request,
        ["if-modified-since", "x-tenant-locale", "accept-language"]
    );
    assert_eq!(m.api.headers.response, ["content-range", "x-ext-trace"]);
    assert_eq!(Manifest::from_json(&m.to_json_pretty()).unwrap(), m);

    let m = with_headers(serde_json::json!({"response": ["Link"]})).unwrap();
    assert!(m.api.headers.request.is_empty());
    assert_eq!(m.api.headers.response, ["link"]);
    // Without declared headers the section is not written back.
    let m = Manifest::from_json(FULL.as_bytes()).unwrap();
    assert!(m.api.headers.is_empty());
    let json = serde_json::to_value(&m).unwrap();
    assert!(json["api"].get("headers").is_none());
    let headers = MAX_DECLARED_HEADERS;
    let names: Vec<String> = (0..headers).map(|i| format!("x-h{i}")).collect();
    with_headers(serde_json::json!({"request": names, "response": names})).unwrap();
}

#[test]
fn declared_headers_are_refused_with_their_path() {
    use serde_json::json;
    let too_many: Vec<String> = (0..=MAX_DECLARED_HEADERS)
        .map(|i| format!("x-h{i}"))
        .collect();
    let cases = [
        (
            json!({"request": ["bad name"]}),
            "api.headers.request[0]",
            "not an HTTP header name",
        ),
        (
            json!({"request": [""]}),
            "api.headers.request[0]",
            "not an HTTP header name",
        ),
        (
            json!({"response": ["a", "b:c"]}),
            "api.headers.response[1]",
            "not an HTTP header name",
        ),
        (
            json!({"response": ["é"]}),
            "api.headers.response[0]",
            "not an HTTP header name",
        ),
        (
            json!({"request": ["X-A", "x-a"]}),
            "api.headers.request[1]",
            "twice",
        ),
        (
            json!({"request": too_many}),
            "api.headers.request",
            "at most 32",
        ),
        (
            json!({"response": too_many}),
            "api.headers.response",
            "at most 32",
        ),
        (
            json!({"request": ["Authorization"]}),
            "api.headers.request[0]",
            "`authorization` can never be declared: it carries",
        ),
        (
            json!({"request": ["proxy-authorization"]}),
            "api.headers.request[0]",
            "credentials",
        ),
        (
            json!({"request": ["cookie"]}),
            "api.headers.request[0]",
            "cookies",
        ),
        (
            json!({"response": ["Set-Cookie"]}),
            "api.headers.response[0]",
            "`set-cookie` can never be declared",
        ),
        (
            json!({"request": ["x-palisade-tenant"]}),
            "api.headers.request[0]",
            "reserved for the platform",
        ),
        (
            json!({"response": ["X-Palisade-Anything"]}),
            "api.headers.response[0]",
            "reserved for the platform",
        ),
        (
            json!({"request": ["a"], "extra": []}),
            "api.headers.extra",
            "unknown field",
        ),
        (
            json!({"request": "accept"}),
            "api.headers.request",
            "invalid type",
        ),
    ];
    for (headers, path, message) in cases {
        let err = with_headers(headers.clone()).unwrap_err();
        assert_eq!(err.path, path, "{headers}: {err}");
        assert!(err.message.contains(message), "{headers}: {err}");
    }
    for name in HOP_BY_HOP_HEADERS {
        for direction in ["request", "response"] {
            let err = with_headers(json!({ direction: [name.to_ascii_uppercase()] })).unwrap_err();
            assert_eq!(err.path, format!("api.headers.{direction}[0]"));
            assert!(
                err.message
                    .contains(&format!("`{name}` can never be declared")),
                "{err}"
            );
            assert!(err.message.contains("hop-by-hop"), "{err}");
        }
    }
}

#[test]
fn reserved_headers_say_why() {
    for name in ["authorization", "cookie", "te", "host", "x-palisade-"] {
        assert!(reserved_header(name).is_some(), "{name}");
    }
    for name in ["accept-language", "x-ext-a", "location", "x-palisad"] {
        assert!(reserved_header(name).is_none(), "{name}");
    }
}

#[test]
fn schema_agrees_with_the_parser_on_api() {
    let text = include_str!("../../../../docs/manifest.schema.json");
    let schema: serde_json::Value = serde_json::from_str(text).unwrap();
    let methods = schema["$defs"]["endpoint"]["properties"]["method"]["enum"]
        .as_array()
        .unwrap();
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*",
    ] {
        assert!(
            methods.iter().any(|m| m == method),
            "schema lacks `{method}`"
        );
    }
    let api = &schema["properties"]["api"]["properties"];
    for direction in ["request", "response"] {
        assert_eq!(
            api["headers"]["properties"][direction]["$ref"],
            "#/$defs/headerNames"
        );
    }
    let names = &schema["$defs"]["headerNames"];
    assert_eq!(names["maxItems"], MAX_DECLARED_HEADERS);
    let description = names["description"].as_str().unwrap();
    for name in CREDENTIAL_HEADERS.iter().chain(HOP_BY_HOP_HEADERS) {
        assert!(description.contains(name), "schema does not name `{name}`");
    }
    assert!(description.contains(PALISADE_HEADER_PREFIX));
}
