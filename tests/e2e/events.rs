//! Events end to end: published through the admin API, delivered by dispatchers through
//! the runner to the `event-probe` guest, which records what it received; retries,
//! dead deliveries, retry by hand, paused installs, and two dispatchers sharing the work.

use std::sync::Arc;
use std::time::Duration;

use palisade_bundle::CapabilityKey;
use palisade_runner::events::{DispatchConfig, Dispatcher};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Platform, ok_json};

const PROBE: &str = "com.example.event-probe";
const APPROVED: &[CapabilityKey] = &[CapabilityKey::Log, CapabilityKey::Storage];

async fn install_probe(platform: &Platform, tenants: &[&str]) {
    let path = format!(
        "{}/guests/event-probe/manifest.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    platform
        .install_guest(&manifest, "event-probe", tenants, APPROVED)
        .await;
}

/// A dispatcher on the platform's runner; failed attempts are due again at once.
fn dispatcher(platform: &Platform, max_attempts: u32) -> Dispatcher {
    Dispatcher::new(
        Arc::clone(&platform.runner_state),
        DispatchConfig {
            max_attempts,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            ..DispatchConfig::default()
        },
    )
}

/// `POST /admin/v1/events`; the status and the answer.
async fn publish(
    platform: &Platform,
    tenant: &str,
    topic: &str,
    id: &str,
    payload: Value,
) -> (u16, Value) {
    let response = platform
        .client
        .post(format!("http://{}/admin/v1/events", platform.gateway))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tenant_id": tenant, "topic": topic, "id": id, "payload": payload}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn admin(platform: &Platform, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    platform
        .client
        .request(
            method,
            format!("http://{}/admin/v1{path}", platform.gateway),
        )
        .bearer_auth(ADMIN_TOKEN)
}

/// What the probe of `tenant` recorded.
async fn seen(platform: &Platform, tenant: &str) -> Vec<Value> {
    let seen = ok_json(platform.request(tenant, reqwest::Method::GET, PROBE, "/seen")).await;
    seen.as_array().unwrap().clone()
}

/// Rounds of `dispatcher` until one claims nothing (a failed attempt is due again within
/// the 1 ms backoff, so each round waits that out first).
async fn drain(dispatcher: &Dispatcher) -> usize {
    let mut total = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        match dispatcher.run_once().await {
            0 => return total,
            n => total += n,
        }
    }
}

#[tokio::test]
async fn an_event_is_delivered_once_with_its_headers_and_logged() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme", "globex"]).await;

    let (status, first) = publish(
        &platform,
        "acme",
        "ticket.created",
        "t-1",
        json!({"ticket": 7}),
    )
    .await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["deliveries"], 1);
    assert_eq!(first["duplicate"], false);
    let (status, again) = publish(
        &platform,
        "acme",
        "ticket.created",
        "t-1",
        json!({"other": 1}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(again["event_id"], first["event_id"]);
    assert_eq!(again["duplicate"], true);
    let (status, unheard) = publish(&platform, "acme", "order.created", "o-1", json!(null)).await;
    assert_eq!(
        (status, &unheard["deliveries"]),
        (202, &json!(0)),
        "{unheard}"
    );

    let dispatcher = dispatcher(&platform, 3);
    assert_eq!(drain(&dispatcher).await, 1);

    let seen_by_acme = seen(&platform, "acme").await;
    assert_eq!(seen_by_acme.len(), 1, "{seen_by_acme:?}");
    let record = &seen_by_acme[0];
    assert_eq!(record["path"], "/on/ticket");
    assert_eq!(record["topic"], "ticket.created");
    assert_eq!(record["id"], first["event_id"]);
    assert_eq!(record["key"], "t-1");
    assert_eq!(record["attempt"], 1);
    assert_eq!(record["content_type"], "application/json");
    assert_eq!(record["payload"], json!({"ticket": 7}));
    let published_at = record["published_at"].as_str().unwrap();
    assert!(
        published_at.ends_with('Z') && published_at.len() == 24,
        "{published_at}"
    );
    assert!(seen(&platform, "globex").await.is_empty());

    let delivered = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/deliveries?state=delivered",
    ))
    .await;
    assert_eq!(delivered.as_array().unwrap().len(), 1, "{delivered}");
    assert_eq!(delivered[0]["last_status"], 204);

    let log = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/executions",
    ))
    .await;
    let event_rows: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["trigger"] == "event")
        .collect();
    assert_eq!(event_rows.len(), 1, "{log}");
    assert_eq!(event_rows[0]["event_id"], first["event_id"]);
    assert_eq!(event_rows[0]["attempt"], 1);
    assert_eq!(event_rows[0]["status"], 204);
    assert_eq!(event_rows[0]["path"], "/on/ticket");
    assert_eq!(event_rows[0]["outcome"], "ok");
}

#[tokio::test]
async fn failures_are_retried_then_dead_and_a_dead_delivery_is_retried_by_hand() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;
    let dispatcher = dispatcher(&platform, 2);

    // Fails once, then succeeds on the second attempt.
    publish(
        &platform,
        "acme",
        "ticket.updated",
        "t-1",
        json!({"fail_attempts": 1}),
    )
    .await;
    assert_eq!(drain(&dispatcher).await, 2);
    let stats = dispatcher.stats();
    assert_eq!(
        (stats.attempts, stats.retried, stats.delivered, stats.dead),
        (2, 1, 1, 0)
    );
    assert_eq!(stats.first_attempts, 1);
    let attempts: Vec<Value> = seen(&platform, "acme")
        .await
        .iter()
        .map(|r| r["attempt"].clone())
        .collect();
    assert_eq!(attempts, [json!(1), json!(2)]);

    // Always fails: dead after two attempts, with its last status.
    let (_, broken) = publish(&platform, "acme", "broken.very.much", "b-1", json!({})).await;
    assert_eq!(broken["deliveries"], 1);
    assert_eq!(drain(&dispatcher).await, 2);
    let dead = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/deliveries?state=dead",
    ))
    .await;
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event_key"], "b-1");
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(dead[0]["last_status"], 500);
    assert_eq!(dead[0]["path"], "/on/broken");
    assert_eq!(dispatcher.stats().dead, 1);

    // Retried by hand: two more attempts, numbered from 1 again.
    let id = dead[0]["id"].as_str().unwrap();
    let retried = ok_json(admin(
        &platform,
        reqwest::Method::POST,
        &format!("/tenants/acme/deliveries/{id}/retry"),
    ))
    .await;
    assert_eq!(retried["state"], "pending");
    assert_eq!(drain(&dispatcher).await, 2);
    let broken_attempts = seen(&platform, "acme")
        .await
        .iter()
        .filter(|r| r["key"] == "b-1")
        .count();
    // Records are keyed by attempt number, so the second round overwrote the first two.
    assert_eq!(broken_attempts, 2);
    let log = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/executions",
    ))
    .await;
    let failed = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["trigger"] == "event" && row["status"] == 500)
        .count();
    assert_eq!(failed, 4, "{log}");

    // A delivered one cannot be retried; an unknown one is not found.
    let delivered = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/deliveries?state=delivered",
    ))
    .await;
    let id = delivered[0]["id"].as_str().unwrap();
    let response = admin(
        &platform,
        reqwest::Method::POST,
        &format!("/tenants/acme/deliveries/{id}/retry"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 409);
    let response = admin(
        &platform,
        reqwest::Method::POST,
        "/tenants/acme/deliveries/nope/retry",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn bad_events_are_refused_with_what_is_wrong() {
    let platform = Platform::start_with(crate::support::Options {
        gateway: |config| config.max_event_payload_bytes = 64,
        ..Default::default()
    })
    .await;
    for (event, status, needle) in [
        (
            json!({"tenant_id": "acme", "topic": "a.*", "id": "1", "payload": {}}),
            400,
            "topic `a.*`",
        ),
        (
            json!({"tenant_id": "acme", "topic": "a", "id": "", "payload": {}}),
            400,
            "event id",
        ),
        (
            json!({"tenant_id": "acme", "topic": "a", "payload": {}}),
            400,
            "missing field `id`",
        ),
        (
            json!({"tenant_id": "acme", "topic": "a", "id": "1", "payload": "x".repeat(100)}),
            413,
            "over the limit of 64",
        ),
        (
            json!({"tenant_id": "acme", "topic": "ticket..created", "id": "1", "payload": {}}),
            400,
            "empty segment",
        ),
        (
            json!({"tenant_id": "nobody", "topic": "a", "id": "1", "payload": {}}),
            404,
            "tenant `nobody` has no installs",
        ),
    ] {
        let response = admin(&platform, reqwest::Method::POST, "/events")
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{event}");
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    let response = platform
        .client
        .post(format!("http://{}/admin/v1/events", platform.gateway))
        .json(&json!({"tenant_id": "acme", "topic": "a", "id": "1", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/deliveries?state=lost",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_disabled_install_receives_its_events_when_enabled_again() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;
    platform
        .registry
        .set_enabled("acme", PROBE, false)
        .await
        .unwrap();
    let (_, published) = publish(&platform, "acme", "ticket.created", "t-1", json!({})).await;
    assert_eq!(published["deliveries"], 1);
    let dispatcher = dispatcher(&platform, 3);
    assert_eq!(drain(&dispatcher).await, 0);
    platform
        .registry
        .set_enabled("acme", PROBE, true)
        .await
        .unwrap();
    assert_eq!(drain(&dispatcher).await, 1);
    assert_eq!(seen(&platform, "acme").await.len(), 1);
}

#[tokio::test]
async fn ended_events_past_their_retention_are_removed_and_their_ids_freed() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;
    let dispatcher = Dispatcher::new(
        Arc::clone(&platform.runner_state),
        DispatchConfig {
            max_attempts: 1,
            retention: Duration::ZERO,
            ..DispatchConfig::default()
        },
    );
    publish(&platform, "acme", "ticket.created", "t-1", json!({})).await;
    publish(&platform, "acme", "broken.now", "b-1", json!({})).await;
    assert_eq!(drain(&dispatcher).await, 2);
    // Disabled, the install keeps its new delivery pending: that event stays.
    platform
        .registry
        .set_enabled("acme", PROBE, false)
        .await
        .unwrap();
    publish(&platform, "acme", "ticket.created", "t-2", json!({})).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    assert_eq!(dispatcher.prune().await, 2);
    let left = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/deliveries",
    ))
    .await;
    let keys: Vec<&Value> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["event_key"])
        .collect();
    assert_eq!(keys, [&json!("t-2")]);
    let (_, again) = publish(&platform, "acme", "ticket.created", "t-1", json!({})).await;
    assert_eq!(again["duplicate"], false);
    let (_, kept) = publish(&platform, "acme", "ticket.created", "t-2", json!({})).await;
    assert_eq!(kept["duplicate"], true);
}

#[tokio::test]
async fn two_dispatchers_share_the_work_and_deliver_each_event_once() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;
    let events = 12;
    for i in 0..events {
        publish(
            &platform,
            "acme",
            "ticket.created",
            &format!("t-{i:02}"),
            json!({"n": i}),
        )
        .await;
    }
    let (a, b) = (dispatcher(&platform, 3), dispatcher(&platform, 3));
    let (from_a, from_b) = tokio::join!(drain(&a), drain(&b));
    assert_eq!(from_a + from_b, events);
    let seen = seen(&platform, "acme").await;
    assert_eq!(seen.len(), events, "{seen:?}");
    assert!(seen.iter().all(|r| r["attempt"] == 1), "{seen:?}");
    let delivered = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/deliveries?state=delivered&limit=100",
    ))
    .await;
    assert_eq!(delivered.as_array().unwrap().len(), events);
}

#[tokio::test]
async fn a_delivery_whose_dispatcher_died_is_delivered_by_another_after_its_lease() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;
    // The first attempt takes 30 s; the dispatcher making it dies a moment into it.
    let payload = json!({"sleep_ms": 30_000, "sleep_attempts": 1});
    publish(&platform, "acme", "ticket.created", "t-1", payload).await;
    let lease = Duration::from_millis(1500);
    let doomed = Dispatcher::new(
        Arc::clone(&platform.runner_state),
        DispatchConfig {
            lease,
            ..DispatchConfig::default()
        },
    );
    let dying = tokio::spawn(async move { doomed.run_once().await });
    // The guest records the attempt before it sleeps: then the dispatcher is mid-delivery.
    for _ in 0..500 {
        if !seen(&platform, "acme").await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen(&platform, "acme").await.len(),
        1,
        "the first attempt never started"
    );
    dying.abort();
    assert!(dying.await.unwrap_err().is_cancelled());

    // Under the dead dispatcher's lease, nobody takes the delivery...
    let survivor = dispatcher(&platform, 3);
    assert_eq!(survivor.run_once().await, 0);
    // ...once it has run out, the next claim delivers it as attempt 2.
    tokio::time::sleep(lease).await;
    assert_eq!(drain(&survivor).await, 1);
    let attempts: Vec<Value> = seen(&platform, "acme")
        .await
        .iter()
        .map(|r| r["attempt"].clone())
        .collect();
    assert_eq!(attempts, [json!(1), json!(2)]);
    let delivered = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/deliveries?state=delivered",
    ))
    .await;
    assert_eq!(delivered[0]["attempts"], 2);
}

#[tokio::test]
async fn a_due_schedule_fires_once_through_the_dispatcher() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;
    let dispatcher = dispatcher(&platform, 3);
    // Its first slot is on a 29th of February: nothing yet.
    assert_eq!(drain(&dispatcher).await, 0);
    sqlx::query("UPDATE extension_schedule SET next_fire_at = 0")
        .execute(platform.registry.pool())
        .await
        .unwrap();
    assert_eq!(drain(&dispatcher).await, 1);
    let seen = seen(&platform, "acme").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["path"], "/on/tick");
    assert_eq!(seen[0]["trigger"], "schedule");
    assert_eq!(seen[0]["topic"], "schedule");
    assert_eq!(seen[0]["published_at"], "1970-01-01T00:00:00.000Z");
    assert_eq!(
        seen[0]["payload"],
        json!({"cron": "0 0 29 2 *", "slot_ms": 0})
    );
    let log = ok_json(admin(
        &platform,
        reqwest::Method::GET,
        "/tenants/acme/executions",
    ))
    .await;
    let fired: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["trigger"] == "schedule")
        .collect();
    assert_eq!(fired.len(), 1, "{log}");
    assert_eq!(fired[0]["status"], 204);
}

#[tokio::test]
async fn an_events_credential_publishes_events_and_nothing_else() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;
    let token = platform
        .registry
        .add_credential("helpdesk", palisade_registry::CredentialScope::Events)
        .await
        .unwrap();
    let event = json!({"tenant_id": "acme", "topic": "ticket.created", "id": "t-1", "payload": {}});
    let response = platform
        .client
        .post(format!("http://{}/admin/v1/events", platform.gateway))
        .bearer_auth(&token)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    for (method, path) in [
        (reqwest::Method::GET, "/admin/v1/tenants/acme/deliveries"),
        (reqwest::Method::GET, "/admin/v1/extensions"),
    ] {
        let response = platform
            .client
            .request(method, format!("http://{}{path}", platform.gateway))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let response = platform
        .client
        .post(format!("http://{}/admin/v1/events", platform.gateway))
        .bearer_auth(format!("{token}x"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("scope `events`"),
        "{body}"
    );
}

// The CLI runs as a child process while this runtime serves the platform it calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_lists_and_issues_credentials() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;
    let server = format!("http://{}", platform.gateway);
    let empty = tempfile::tempdir().unwrap();
    // `palisade events {line} --server S --tenant acme`, the line split at spaces.
    let run = |line: &str| {
        let mut args: Vec<&str> = vec!["events"];
        args.extend(line.split(' '));
        args.extend(["--server", server.as_str(), "--tenant", "acme"]);
        let output = crate::admin::palisade(empty.path(), &args, Some(ADMIN_TOKEN));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };
    let (ok, out, err) = run(r#"publish --topic broken.now --id b-1 --payload {"x":1}"#);
    assert!(ok, "{err}");
    assert!(out.contains("1 deliveries"), "{out}");
    let (ok, out, _) = run("publish --topic broken.now --id b-1");
    assert!(ok && out.contains("published before"), "{out}");
    let (ok, _, err) = run("publish --topic a --id x --payload {nope");
    assert!(!ok && err.contains("--payload is not JSON"), "{err}");

    assert_eq!(drain(&dispatcher(&platform, 1)).await, 1);
    let (ok, out, err) = run("list --state dead");
    assert!(ok, "{err}");
    assert!(
        out.contains("broken.now") && out.contains("attempts 1"),
        "{out}"
    );
    let id = out.split_whitespace().next().unwrap().to_owned();
    let (ok, out, err) = run(&format!("retry {id}"));
    assert!(ok, "{err}");
    assert!(out.contains("is due now"), "{out}");

    // Credentials live in the data directory's registry.
    let data = tempfile::tempdir().unwrap();
    let local = |args: &[&str]| crate::admin::palisade(data.path(), args, None);
    let added = local(&["credentials", "add", "helpdesk", "--scope", "events"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let token = String::from_utf8_lossy(&added.stdout).trim().to_owned();
    assert!(token.starts_with("palisade_cred_"), "{token}");
    let listed = local(&["credentials", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("helpdesk  scope events") && !listed.contains(&token),
        "{listed}"
    );
    assert!(
        local(&["credentials", "remove", "helpdesk"])
            .status
            .success()
    );
    let again = local(&["credentials", "remove", "helpdesk"]);
    assert!(!again.status.success());
}

#[tokio::test]
async fn the_ticket_audit_sample_keeps_events_and_its_heartbeat() {
    const AUDIT: &str = "com.example.ticket-audit";
    let platform = Platform::start().await;
    let path = format!(
        "{}/../guests/ticket-audit/manifest.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    platform
        .install_guest(&manifest, "ticket-audit", &["acme"], APPROVED)
        .await;
    for (id, ticket) in [("t-1", 1), ("t-2", 2)] {
        let (status, _) = publish(
            &platform,
            "acme",
            "ticket.created",
            id,
            json!({"ticket": ticket}),
        )
        .await;
        assert_eq!(status, 202);
    }
    sqlx::query("UPDATE extension_schedule SET next_fire_at = 0")
        .execute(platform.registry.pool())
        .await
        .unwrap();
    // The two events and the slot made due; its `@every 10s` may fire once more meanwhile.
    assert!(drain(&dispatcher(&platform, 3)).await >= 3);
    let audit = ok_json(platform.request("acme", reqwest::Method::GET, AUDIT, "/events")).await;
    let events = audit["events"].as_array().unwrap();
    let tickets: Vec<&Value> = events.iter().map(|e| &e["payload"]["ticket"]).collect();
    assert_eq!(tickets, [&json!(2), &json!(1)], "{audit}");
    assert_eq!(events[0]["topic"], "ticket.created");
    assert_eq!(events[0]["attempt"], 1);
    let heartbeat = audit["heartbeat"].as_str().unwrap();
    assert!(
        heartbeat.ends_with(":00.000Z") || heartbeat.ends_with("0.000Z"),
        "{heartbeat}"
    );
}
