use std::time::Duration;

use super::*;
use crate::http::{Method, Request, Response};

const MANIFEST: &str = r#"{
  "$schema": "https://palisade.dev/schemas/manifest.schema.json",
  "id": "com.example.probe",
  "version": "1.2.3",
  "capabilities": {
    "storage": { "namespaces": ["notes"], "max_bytes": 100 },
    "secrets": ["API_TOKEN", "UNSET"],
    "http": { "allow": ["https://api.example.com", "https://*.example.org:8443", "http://10.0.0.1"] },
    "metrics": true,
    "cache": true
  }
}"#;

fn host() -> TestHost {
    TestHost::from_manifest(MANIFEST).expect("the test manifest reads")
}

/// Runs `f` as the body of one call and returns what it returned.
fn within<R>(host: &TestHost, f: impl FnOnce() -> R) -> R {
    let mut out = None;
    host.call(
        |_| {
            out = Some(f());
            Response::new(204)
        },
        Request::new(Method::Get, "/"),
    );
    out.expect("the handler ran")
}

mod manifest {
    use super::*;

    #[test]
    fn context_comes_from_the_manifest_and_the_settings() {
        let host = host()
            .with_tenant("acme")
            .with_user("ada")
            .with_config("greeting", "Hi");
        let (invocation, config, greeting) = within(&host, || {
            (
                crate::context::get(),
                crate::context::config(),
                crate::context::config_get("greeting"),
            )
        });
        assert_eq!(invocation.extension_id, "com.example.probe");
        assert_eq!(invocation.version, "1.2.3");
        assert_eq!(invocation.tenant_id, "acme");
        assert_eq!(invocation.user.as_deref(), Some("ada"));
        assert_eq!(invocation.trigger, "http");
        assert_eq!(invocation.request_id, "test-request-1");
        assert_eq!(config, [("greeting".to_owned(), "Hi".to_owned())]);
        assert_eq!(greeting.as_deref(), Some("Hi"));
        within(&host, || ());
        assert_eq!(host.invocation().request_id, "test-request-2");
    }

    #[test]
    fn malformed_capabilities_are_named() {
        for (manifest, key) in [
            (
                r#"{"capabilities": {"storage": {"namespaces": []}}}"#,
                "capabilities.storage.namespaces",
            ),
            (
                r#"{"capabilities": {"secrets": "API"}}"#,
                "capabilities.secrets",
            ),
            (
                r#"{"capabilities": {"metrics": "yes"}}"#,
                "capabilities.metrics",
            ),
            (
                r#"{"capabilities": {"http": {"allow": ["https://ok.example", "https://x.example/path"]}}}"#,
                "capabilities.http.allow[1]",
            ),
            (
                r#"{"capabilities": {"http": {"allow": ["ftp://x.example"]}}}"#,
                "capabilities.http.allow[0]",
            ),
        ] {
            let error = TestHost::from_manifest(manifest).err().expect(manifest);
            assert!(
                matches!(&error, ManifestError::Invalid { key: named, .. } if named == key),
                "{manifest}: {error}"
            );
        }
        assert!(matches!(
            TestHost::from_manifest("not json"),
            Err(ManifestError::NotJson(_))
        ));
    }

    #[test]
    #[should_panic(expected = "does not request `capabilities.storage`")]
    fn an_interface_the_manifest_does_not_request_panics_naming_the_key() {
        #[cfg(feature = "storage")]
        within(&TestHost::new(), || crate::storage::get("notes", "k").ok());
        #[cfg(not(feature = "storage"))]
        panic!("does not request `capabilities.storage`");
    }

    #[test]
    #[should_panic(expected = "called outside `TestHost::call`")]
    fn host_functions_outside_a_call_panic() {
        crate::context::get();
    }

    #[test]
    fn events_are_delivered_with_the_platform_headers() {
        let host = TestHost::new().with_user("ada");
        let handler = |request: Request| {
            let delivery = crate::events::Delivery::of(&request).expect("a delivery");
            let trigger = crate::context::get().trigger;
            let user = crate::context::get().user;
            Response::json(
                200,
                &serde_json::json!({
                    "topic": delivery.topic, "id": delivery.event_id, "attempt": delivery.attempt,
                    "trigger": trigger, "user": user, "body": request.json::<serde_json::Value>().ok(),
                }),
            )
        };
        let first = host.deliver(
            handler,
            "/on/ticket",
            "ticket.created",
            "e-1",
            &serde_json::json!({"n": 1}),
        );
        let body: serde_json::Value = first.body_json().expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({"topic": "ticket.created", "id": "e-1", "attempt": 1,
                "trigger": "event", "user": null, "body": {"n": 1}})
        );
        let again = host.deliver(
            handler,
            "/on/ticket",
            "ticket.created",
            "e-1",
            &serde_json::json!({"n": 1}),
        );
        assert_eq!(
            again.body_json::<serde_json::Value>().expect("JSON")["attempt"],
            2
        );
        // An HTTP call has the user back.
        let user = within(&host, || crate::context::get().user);
        assert_eq!(user.as_deref(), Some("ada"));
    }

    #[test]
    fn log_lines_are_kept() {
        let host = TestHost::new();
        within(&host, || {
            crate::log::write(crate::log::Level::Warn, "slow", &[("ms", "950")]);
            crate::log::info("done");
        });
        let logs = host.logs();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].level, crate::log::Level::Warn);
        assert_eq!(logs[0].fields, [("ms".to_owned(), "950".to_owned())]);
        assert_eq!(logs[1].message, "done");
    }

    #[test]
    fn a_streaming_response_is_collected() {
        let response = TestHost::new().call(
            |_| {
                Response::stream(200, |writer| {
                    for n in 1..=3 {
                        crate::time::sleep(Duration::from_secs(60));
                        writer.write(format!("{n}"))?;
                    }
                    Ok(())
                })
                .with_header("x-kind", "stream")
            },
            Request::new(Method::Get, "/"),
        );
        assert_eq!(response.body(), b"123");
        assert_eq!(response.header("x-kind"), Some("stream"));
    }

    #[test]
    fn a_streaming_handler_gets_the_body() {
        let response = TestHost::new().call_streaming(
            |_, body| Response::new(200).with_body(body.read_all(1024).unwrap_or_default()),
            Request::new(Method::Post, "/").with_body("payload"),
        );
        assert_eq!(response.body(), b"payload");
    }
}

#[cfg(feature = "storage")]
mod storage {
    use super::*;
    use crate::storage::{self, Condition, StorageError};

    #[test]
    fn revisions_come_from_one_counter_and_conditions_hold() {
        let host = host();
        within(&host, || {
            assert_eq!(
                storage::set("notes", "a", b"1", Condition::MustNotExist),
                Ok(1)
            );
            assert_eq!(
                storage::set("notes", "a", b"2", Condition::MustNotExist),
                Err(StorageError::Conflict { current: Some(1) })
            );
            assert_eq!(storage::set("notes", "b", b"x", Condition::Any), Ok(2));
            assert_eq!(
                storage::set("notes", "a", b"3", Condition::MustEqualRevision(2)),
                Err(StorageError::Conflict { current: Some(1) })
            );
            assert_eq!(
                storage::set("notes", "a", b"3", Condition::MustEqualRevision(1)),
                Ok(3)
            );
            // A delete takes no revision; a re-created key gets a new one.
            assert_eq!(
                storage::delete("notes", "a", Condition::MustNotExist),
                Err(StorageError::Conflict { current: Some(3) })
            );
            assert_eq!(storage::delete("notes", "a", Condition::Any), Ok(true));
            assert_eq!(storage::delete("notes", "a", Condition::Any), Ok(false));
            assert_eq!(
                storage::delete("notes", "a", Condition::MustNotExist),
                Ok(false)
            );
            assert_eq!(
                storage::delete("notes", "a", Condition::MustEqualRevision(3)),
                Err(StorageError::Conflict { current: None })
            );
            assert_eq!(storage::set("notes", "a", b"4", Condition::Any), Ok(4));
        });
        let stored = host.stored("notes", "a").expect("stored");
        assert_eq!((stored.value.as_slice(), stored.revision), (&b"4"[..], 4));
    }

    #[test]
    fn arguments_and_grants_are_checked_first() {
        let host = host();
        within(&host, || {
            assert_eq!(storage::get("other", "k"), Err(StorageError::AccessDenied));
            assert_eq!(storage::get("Notes", "k"), Err(StorageError::AccessDenied));
            assert_eq!(
                storage::get("notes", ""),
                Err(StorageError::InvalidArgument("the key is empty".into()))
            );
            assert_eq!(
                storage::set("notes", "a\0b", b"", Condition::Any),
                Err(StorageError::InvalidArgument(
                    "the key contains a NUL character".into()
                ))
            );
            assert_eq!(
                storage::get("notes", &"k".repeat(513)),
                Err(StorageError::TooLarge)
            );
            assert_eq!(
                storage::list("notes", "", None, 0),
                Err(StorageError::InvalidArgument(
                    "the limit 0 is outside 1..=1000".into()
                ))
            );
            assert_eq!(
                storage::list("notes", "", Some("not a cursor!"), 10),
                Err(StorageError::InvalidArgument(
                    "the cursor is not one that list-entries returned".into()
                ))
            );
        });
    }

    #[test]
    fn the_manifest_quota_holds_and_shrinking_writes_pass() {
        let host = host();
        within(&host, || {
            // max_bytes is 100: key + value bytes of all entries.
            assert_eq!(
                storage::set("notes", "big", &[b'x'; 90], Condition::Any),
                Ok(1)
            );
            assert_eq!(
                storage::set("notes", "more", &[b'x'; 10], Condition::Any),
                Err(StorageError::QuotaExceeded)
            );
            assert_eq!(
                storage::set("notes", "big", &[b'x'; 10], Condition::Any),
                Ok(2)
            );
            assert_eq!(
                storage::set("notes", "more", &[b'x'; 10], Condition::Any),
                Ok(3)
            );
        });
        assert!(host.stored("notes", "more").is_some());
    }

    #[test]
    fn a_call_has_a_budget_of_operations() {
        let host = host();
        within(&host, || {
            for _ in 0..1000 {
                assert_eq!(storage::get("notes", "k"), Ok(None));
            }
            assert_eq!(storage::get("notes", "k"), Err(StorageError::QuotaExceeded));
        });
        // The next call starts again.
        within(&host, || assert_eq!(storage::get("notes", "k"), Ok(None)));
    }

    #[test]
    fn listing_pages_in_key_order_with_opaque_cursors() {
        let host = TestHost::new().grant_storage(["notes"]);
        within(&host, || {
            for key in ["b2", "a", "b1", "b3", "c"] {
                storage::set("notes", key, key.as_bytes(), Condition::Any).expect("set");
            }
            let first = storage::list("notes", "b", None, 2).expect("page");
            let keys: Vec<_> = first.entries.iter().map(|e| e.key.as_str()).collect();
            assert_eq!(keys, ["b1", "b2"]);
            let cursor = first.next_cursor.expect("more follow");
            // Written between pages: behind the cursor (not seen) and ahead of it (seen).
            storage::set("notes", "b0", b"", Condition::Any).expect("set");
            storage::set("notes", "b4", b"", Condition::Any).expect("set");
            let second = storage::list("notes", "b", Some(&cursor), 2).expect("page");
            let keys: Vec<_> = second.entries.iter().map(|e| e.key.as_str()).collect();
            assert_eq!(keys, ["b3", "b4"]);
            assert_eq!(second.next_cursor, None);
        });
    }
}

#[cfg(feature = "secrets")]
mod secrets {
    use super::*;
    use crate::secrets::{self, SecretError};

    #[test]
    fn granted_names_read_their_values() {
        let host = host()
            .with_secret("API_TOKEN", "t0ken")
            .with_secret("OTHER", "x");
        within(&host, || {
            assert_eq!(secrets::get("API_TOKEN"), Ok("t0ken".to_owned()));
            assert_eq!(secrets::get("UNSET"), Err(SecretError::NotFound));
            // A value is there, but the manifest does not list the name.
            assert_eq!(secrets::get("OTHER"), Err(SecretError::NotGranted));
        });
    }
}

#[cfg(feature = "http-client")]
mod egress {
    use super::*;
    use crate::fetch::{self, FetchError};

    #[test]
    fn scripted_answers_reach_allowed_origins() {
        let host = host().with_answer(
            Method::Get,
            "https://api.example.com/v1/status",
            Response::json(200, &serde_json::json!({ "ok": true })),
        );
        let response = within(&host, || {
            fetch::fetch(fetch::Request::get("https://API.example.com:443/v1/status"))
        });
        // The URL differs from the scripted one: it is allowed, but nothing answers it.
        assert!(
            matches!(response, Err(FetchError::Failed(m)) if m.contains("no answer is scripted"))
        );
        let response = within(&host, || {
            fetch::fetch(
                fetch::Request::get("https://api.example.com/v1/status")
                    .with_header("x-trace", "1"),
            )
        })
        .expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), br#"{"ok":true}"#);
        let sent = host.sent_requests();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].headers, [("x-trace".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn the_allow_list_is_enforced_as_the_host_does() {
        let host = host();
        let outcomes = within(&host, || {
            [
                "https://example.com/",          // another host
                "http://api.example.com/",       // another scheme
                "https://api.example.com:8443/", // another port
                "https://example.org:8443/",     // a wildcard does not cover the domain
                "https://a.b.example.org/",      // the wildcard's port is 8443
                "https://api.example.com./",     // a trailing dot
            ]
            .map(|url| fetch::fetch(fetch::Request::get(url)))
        });
        for outcome in outcomes {
            assert!(
                matches!(outcome, Err(FetchError::Denied { .. })),
                "{outcome:?}"
            );
        }
        let allowed = within(&host, || {
            fetch::fetch(fetch::Request::get("https://a.b.example.org:8443/x"))
        });
        assert!(matches!(allowed, Err(FetchError::Failed(m)) if m.contains("no answer")));
        // Allowed by the manifest, but the platform forbids private addresses.
        let private = within(&host, || {
            fetch::fetch(fetch::Request::get("http://10.0.0.1/"))
        });
        assert_eq!(
            private.err(),
            Some(FetchError::Prohibited {
                url: "http://10.0.0.1/".into()
            })
        );
    }

    #[test]
    fn forbidden_headers_and_the_request_limit() {
        let host = host();
        within(&host, || {
            let refused = fetch::fetch(
                fetch::Request::get("https://api.example.com/").with_header("Host", "evil"),
            );
            assert_eq!(
                refused.err(),
                Some(FetchError::InvalidRequest(
                    "the header `host` is not allowed in an outgoing request".into()
                ))
            );
            for _ in 0..32 {
                let _ = fetch::fetch(fetch::Request::get("https://api.example.com/"));
            }
            let limited = fetch::fetch(fetch::Request::get("https://api.example.com/"));
            assert!(
                matches!(&limited, Err(FetchError::Failed(m)) if m.contains("ConnectionLimitReached")),
                "{limited:?}"
            );
        });
    }

    #[test]
    fn forbidden_addresses() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            let parsed: std::net::IpAddr = address.parse().expect(address);
            assert!(crate::testing::egress::forbidden(parsed), "{address}");
        }
        for address in ["93.184.216.34", "2606:4700::1111", "64:ff9b::5db8:d822"] {
            let parsed: std::net::IpAddr = address.parse().expect(address);
            assert!(!crate::testing::egress::forbidden(parsed), "{address}");
        }
    }
}

#[cfg(feature = "metrics")]
mod metrics {
    use super::*;
    use crate::metrics::{self, MetricError};

    #[test]
    fn samples_are_recorded_and_checked_as_the_host_does() {
        let host = host();
        within(&host, || {
            metrics::counter_add("hits_total", &[("page", "home")], 2).expect("counter");
            metrics::counter_add("hits", &[("page", "home")], 1).expect("counter");
            metrics::gauge_set("depth", &[], 3.5).expect("gauge");
            metrics::histogram_observe("seconds", &[("b", "2"), ("a", "1")], 0.25)
                .expect("histogram");
            assert_eq!(
                metrics::gauge_set("hits", &[], 1.0),
                Err(MetricError::KindMismatch)
            );
            assert_eq!(
                metrics::gauge_set("Depth", &[], 1.0),
                Err(MetricError::InvalidName(
                    "metric name `Depth` must start with a lower-case letter or `_`".into()
                ))
            );
            assert!(matches!(
                metrics::counter_add("x", &[("tenant", "t")], 1),
                Err(MetricError::InvalidLabel(m)) if m.starts_with("label name `tenant` is reserved")
            ));
            assert_eq!(
                metrics::gauge_set("seconds_count", &[], 1.0),
                Err(MetricError::InvalidName(
                    "gauge name `seconds_count` would collide in the exposition with the `seconds_count` series of histogram `seconds`; choose another name".into()
                ))
            );
        });
        assert_eq!(host.counter("hits", &[("page", "home")]), Some(3));
        assert_eq!(host.counter("hits_total", &[("page", "home")]), Some(3));
        assert_eq!(host.gauge("depth", &[]), Some(3.5));
        assert_eq!(
            host.observations("seconds", &[("a", "1"), ("b", "2")]),
            [0.25]
        );
    }

    #[test]
    fn series_are_bounded_per_install() {
        let host = host();
        within(&host, || {
            for i in 0..1000 {
                metrics::counter_add("c", &[("i", &i.to_string())], 1).expect("within the bound");
            }
            assert_eq!(
                metrics::counter_add("c", &[("i", "new")], 1),
                Err(MetricError::TooManySeries)
            );
            // Existing series keep being recorded.
            metrics::counter_add("c", &[("i", "7")], 1).expect("existing series");
        });
        assert_eq!(host.counter("c", &[("i", "7")]), Some(2));
    }
}

#[cfg(feature = "cache")]
mod cache {
    use super::*;
    use crate::cache::{self, CacheError};

    #[test]
    fn values_expire_on_the_host_clock() {
        let host = host();
        within(&host, || {
            cache::set("rates", b"1.1", Duration::from_secs(60)).expect("set");
            assert_eq!(cache::get("rates"), Ok(Some(b"1.1".to_vec())));
            assert_eq!(
                cache::set("k", b"", Duration::ZERO),
                Err(CacheError::InvalidTtl)
            );
            assert_eq!(
                cache::get(""),
                Err(CacheError::InvalidKey("the key is empty".into()))
            );
            assert_eq!(
                cache::set("k", &vec![0; 1024 * 1024 + 1], Duration::from_secs(1)),
                Err(CacheError::TooLarge)
            );
        });
        host.advance(Duration::from_secs(59));
        within(&host, || {
            assert!(cache::get("rates").expect("get").is_some())
        });
        within(&host, || crate::time::sleep(Duration::from_secs(1)));
        within(&host, || assert_eq!(cache::get("rates"), Ok(None)));
    }
}
