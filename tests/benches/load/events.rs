//! Scenario: events, on each registry backend.
//!
//! * **Publishing.** `POST /admin/v1/events` through a gateway, driven by `wrk` with a fresh
//!   event id per request, for a topic no subscription matches (the event row alone: the
//!   baseline), for one with one matching subscription, and for a tenant with 100
//!   installs subscribed to it. Dispatching is off here, so that this measures the
//!   publishing transaction alone.
//! * **Delivery lag.** Events published at a fixed rate, spread over the installs of
//!   several tenants, while the dispatchers deliver them to `tests/guests/event-probe`
//!   (which writes one storage key per delivery). The lag of a delivery is read from the
//!   registry: from the event's publish time to the time its first attempt was recorded
//!   as delivered. On SQLite the runner's own dispatcher; on PostgreSQL, the runner's and
//!   a `palisade dispatcher` process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use palisade_bundle::CapabilityKey;
use sqlx::Row as _;

use crate::report::{self, Spread, Subject, count, latency, ratio};
use crate::setup::{self, Bench, DataDir, Server};
use crate::wrk::{Feed, Request, Target};

const EXTENSION: &str = "com.example.event-probe";
/// Installs subscribed to the topic of the fan-out subject.
const FAN_OUT: usize = 100;
/// Tenants (one install each) the lag scenario publishes to in turn.
const LAG_TENANTS: usize = 20;
/// Events published per second in the lag scenario.
const LAG_RATE: u32 = 100;
/// How long the dispatchers may take to deliver a round's events once publishing ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Operator settings of every process: the per-install storage write rate off (the probe
/// writes once per delivery, all for a few installs).
const CONFIG: &str = "[storage]\ninstall_writes_per_second = 0\n";

/// One backend's platform for publishing: a runner not dispatching, and a gateway.
struct Publishing {
    name: &'static str,
    data: DataDir,
    _runner: Server,
    gateway: Server,
    admin_token: String,
}

/// One backend's platform for delivering: the runner's dispatcher, and on PostgreSQL a
/// second one in its own process.
struct Delivering {
    name: &'static str,
    data: DataDir,
    runner: Server,
    gateway: Server,
    dispatcher: Option<Server>,
    admin_token: String,
    /// Per round: p50, p99 and largest lag, and deliveries per second.
    rounds: Vec<LagRound>,
}

#[derive(Debug, Clone, Copy)]
struct LagRound {
    p50: f64,
    p99: f64,
    max: f64,
    per_second: f64,
    retried: usize,
}

pub(crate) async fn run(bench: &Bench) -> Result<String> {
    let mut skipped = None;
    let mut publishing =
        vec![publishing_platform(bench, "SQLite", bench.data_dir("events").await?).await?];
    let mut delivering =
        vec![delivering_platform(bench, "SQLite", bench.data_dir("events-lag").await?).await?];
    match &bench.postgres {
        Ok(server) => {
            let data = bench.data_dir_on_postgres("events", server).await?;
            publishing.push(publishing_platform(bench, "PostgreSQL", data).await?);
            let data = bench.data_dir_on_postgres("events_lag", server).await?;
            delivering.push(delivering_platform(bench, "PostgreSQL", data).await?);
        }
        Err(reason) => skipped = Some(format!("\nPostgreSQL: {reason}.\n")),
    }

    let mut subjects = Vec::new();
    for platform in &publishing {
        for (what, tenant, topic, deliveries) in [
            ("no matching subscription", "one", "nothing.matches", 0),
            ("1 matching subscription", "one", "ticket.created", 1),
            (
                "100 matching subscriptions",
                "hundred",
                "ticket.created",
                FAN_OUT,
            ),
        ] {
            let target = Target {
                expect: Some(format!("\"deliveries\":{deliveries},\"duplicate\":false")),
                ..Target::fed(&platform.gateway.url, publish_feed(platform, tenant, topic))
            };
            subjects.push(Subject::new(format!("{} — {what}", platform.name), target));
        }
    }
    report::measure(bench, &mut subjects).await?;
    for platform in &publishing {
        platform.data.drop_schema().await?;
    }

    for round in 0..bench.settings.rounds {
        for offset in 0..delivering.len() {
            let at = (round + offset) % delivering.len();
            let platform = &mut delivering[at];
            let figures = lag_round(bench, platform, round).await?;
            eprintln!(
                "load bench:   round {} lag on {}: p50 {}, p99 {}, {:.0} deliveries/s",
                round + 1,
                platform.name,
                latency(figures.p50),
                latency(figures.p99),
                figures.per_second
            );
            platform.rounds.push(figures);
        }
    }
    for platform in &mut delivering {
        platform.runner.check_alive()?;
        if let Some(dispatcher) = &mut platform.dispatcher {
            dispatcher.check_alive()?;
        }
        platform.data.drop_schema().await?;
    }
    Ok(report_text(bench, &subjects, &delivering, skipped))
}

fn report_text(
    bench: &Bench,
    subjects: &[Subject],
    delivering: &[Delivering],
    skipped: Option<String>,
) -> String {
    let mut out = format!(
        "**Publishing**: `POST /admin/v1/events` through a gateway with the admin token, a \
         fresh event id per request and a {}-byte payload; the runner does not dispatch. \
         Tenant `one` has `{EXTENSION}` installed (`ticket.*`); tenant `hundred` has {FAN_OUT} \
         extensions installed, each subscribed to `ticket.*`, so each of its events writes \
         {FAN_OUT} delivery rows in the publishing transaction. {}.\n\n",
        payload().to_string().len(),
        bench.settings.method()
    );
    out.push_str(&report::subjects_table(subjects));
    let mut rows = Vec::new();
    for backend in subjects.chunks(3) {
        if let [none, one, hundred] = backend {
            for (label, subject) in [("1 subscription", one), ("100 subscriptions", hundred)] {
                let (median, per_round) = subject.rps_ratio(none);
                rows.push(vec![
                    format!(
                        "{}: {label} ÷ none",
                        none.label.split(" — ").next().unwrap_or("")
                    ),
                    ratio(median),
                    format!("{}–{}", ratio(per_round.min), ratio(per_round.max)),
                    ratio(subject.p99().median / none.p99().median),
                ]);
            }
        }
    }
    out.push_str(
        "\nAgainst publishing with no matching subscription (throughput of the medians, \
         per-round range; p99 of the medians):\n\n",
    );
    out.push_str(&report::table(
        &["ratio", "throughput", "per round", "p99"],
        &rows,
    ));

    out.push_str(&format!(
        "\n**Delivery lag**: {LAG_RATE} events per second for {} s per round, published \
         through the gateway to {LAG_TENANTS} tenants in turn (one `{EXTENSION}` install \
         each, whose handler writes one storage key); lag is from the event's publish time to \
         its delivery being recorded, both read from the registry; the round ends when every \
         delivery is recorded. Dispatchers at the default settings (batch 16, poll 500 ms): \
         the runner's own on SQLite; the runner's and one `palisade dispatcher` process on \
         PostgreSQL. A dispatcher that claimed less than a full batch sleeps a poll interval, \
         so at this rate the lag is mostly that wait. {} rounds, backends alternated; \
         medians over rounds, (min–max).\n\n",
        bench.settings.duration.as_secs(),
        bench.settings.rounds
    ));
    let lag_rows: Vec<Vec<String>> = delivering
        .iter()
        .map(|p| {
            let spread = |f: fn(&LagRound) -> f64| Spread::of(p.rounds.iter().map(f));
            vec![
                p.name.to_owned(),
                spread(|r| r.p50).show(latency),
                spread(|r| r.p99).show(latency),
                spread(|r| r.max).show(latency),
                spread(|r| r.per_second).show(count),
                p.rounds
                    .iter()
                    .map(|r| r.retried)
                    .sum::<usize>()
                    .to_string(),
            ]
        })
        .collect();
    out.push_str(&report::table(
        &[
            "dispatchers",
            "lag p50",
            "lag p99",
            "lag max",
            "delivered/s",
            "retried",
        ],
        &lag_rows,
    ));
    if let [sqlite, postgres] = delivering {
        let median =
            |p: &Delivering, f: fn(&LagRound) -> f64| Spread::of(p.rounds.iter().map(f)).median;
        out.push_str(&format!(
            "\nPostgreSQL (two dispatchers) against SQLite (one): lag p50 {}, p99 {}.\n",
            ratio(median(postgres, |r| r.p50) / median(sqlite, |r| r.p50)),
            ratio(median(postgres, |r| r.p99) / median(sqlite, |r| r.p99)),
        ));
    }
    out.extend(skipped);
    out
}

/// The probe's manifest as extension `id`, with room in storage for every delivery of the
/// bench.
fn manifest(id: &str) -> Result<serde_json::Value> {
    let mut manifest = setup::guest_manifest("event-probe")?;
    manifest["id"] = id.into();
    manifest["capabilities"]["storage"]["max_bytes"] = (1u64 << 30).into();
    Ok(manifest)
}

const APPROVED: &[CapabilityKey] = &[CapabilityKey::Log, CapabilityKey::Storage];

/// Publishes the probe (and its {FAN_OUT} copies for tenant `hundred`), installs them and
/// starts a runner that does not dispatch and a gateway.
async fn publishing_platform(
    bench: &Bench,
    name: &'static str,
    data: DataDir,
) -> Result<Publishing> {
    let wasm = std::fs::read(env!("PALISADE_GUEST_EVENT_PROBE"))?;
    data.publish(&manifest(EXTENSION)?, &wasm).await?;
    data.install("one", EXTENSION, APPROVED).await?;
    eprintln!("load bench:   events on {name}: publishing {FAN_OUT} subscribed extensions");
    for i in 0..FAN_OUT {
        let id = format!("{EXTENSION}-{i}");
        data.publish(&manifest(&id)?, &wasm)
            .await
            .with_context(|| format!("publishing {id}"))?;
        data.install("hundred", &id, APPROVED).await?;
    }
    let config = format!("{CONFIG}[events]\ndispatch = false\n");
    let runner = bench.runner(&data, Some(&config)).await?;
    let gateway = bench.gateway(&data, &runner).await?;
    let admin_token = admin_token(&data)?;
    Ok(Publishing {
        name,
        data,
        _runner: runner,
        gateway,
        admin_token,
    })
}

/// Publishes and installs the probe for the lag tenants; starts a dispatching runner, a
/// gateway and, on PostgreSQL, a second dispatcher.
async fn delivering_platform(
    bench: &Bench,
    name: &'static str,
    data: DataDir,
) -> Result<Delivering> {
    let wasm = std::fs::read(env!("PALISADE_GUEST_EVENT_PROBE"))?;
    data.publish(&manifest(EXTENSION)?, &wasm).await?;
    for t in 0..LAG_TENANTS {
        data.install(&lag_tenant(t), EXTENSION, APPROVED).await?;
    }
    let runner = bench.runner(&data, Some(CONFIG)).await?;
    let gateway = bench.gateway(&data, &runner).await?;
    let dispatcher = match name {
        "PostgreSQL" => Some(bench.dispatcher(&data, Some(CONFIG)).await?),
        _ => None,
    };
    let admin_token = admin_token(&data)?;
    Ok(Delivering {
        name,
        data,
        runner,
        gateway,
        dispatcher,
        admin_token,
        rounds: Vec::new(),
    })
}

fn lag_tenant(t: usize) -> String {
    format!("lag-{t}")
}

/// The admin token the gateway generated in the data directory.
fn admin_token(data: &DataDir) -> Result<String> {
    let path = data.path().join("keys/admin.token");
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the admin token {}", path.display()))?;
    Ok(token.trim().to_owned())
}

/// `POST /admin/v1/events` of `topic` for `tenant` with the event id `key`.
fn publish_request(admin_token: &str, tenant: &str, topic: &str, key: &str) -> Request {
    let body = serde_json::json!({
        "tenant_id": tenant,
        "topic": topic,
        "id": key,
        "payload": payload(),
    });
    Request {
        method: "POST".into(),
        path: "/admin/v1/events".into(),
        headers: vec![
            ("Authorization".into(), format!("Bearer {admin_token}")),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: Some(body.to_string()),
    }
}

/// The payload of every event.
fn payload() -> serde_json::Value {
    serde_json::json!({"ticket": 42, "status": "open"})
}

/// Publishing requests with a fresh event id each.
fn publish_feed(platform: &Publishing, tenant: &'static str, topic: &'static str) -> Feed {
    let token = platform.admin_token.clone();
    Arc::new(move |_| {
        let key = uuid::Uuid::now_v7().to_string();
        Ok(publish_request(&token, tenant, topic, &key))
    })
}

/// Publishes at [`LAG_RATE`] for the load duration, waits for every delivery, and reads
/// the lags from the registry.
async fn lag_round(bench: &Bench, platform: &mut Delivering, round: usize) -> Result<LagRound> {
    let run = format!("lag-{round}-{}", uuid::Uuid::new_v4().simple());
    let total = (f64::from(LAG_RATE) * bench.settings.duration.as_secs_f64()) as usize;
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / LAG_RATE);
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..total {
        ticks.tick().await;
        let request = publish_request(
            &platform.admin_token,
            &lag_tenant(i % LAG_TENANTS),
            "ticket.created",
            &format!("{run}-{i}"),
        );
        let client = bench.client.clone();
        let base = platform.gateway.url.clone();
        sent.spawn(async move { setup::send(&client, &base, &request).await });
    }
    while let Some(answer) = sent.join_next().await {
        let (status, body) = answer??;
        ensure!(
            status == 202,
            "publishing answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let rows = loop {
        let rows = sqlx::query(
            "SELECT e.published_at, d.updated_at, d.state, d.attempts \
             FROM extension_event_delivery d JOIN extension_event e ON e.id = d.event_id \
             WHERE e.event_key LIKE $1",
        )
        .bind(format!("{run}-%"))
        .fetch_all(platform.data.registry.pool())
        .await?;
        let delivered = rows
            .iter()
            .filter(|row| {
                row.try_get::<String, _>("state")
                    .is_ok_and(|s| s == "delivered")
            })
            .count();
        if rows.len() == total && delivered == total {
            break rows;
        }
        if Instant::now() > deadline {
            platform.runner.check_alive()?;
            bail!(
                "{} of {total} events delivered {} s after publishing ended ({} delivery rows)",
                delivered,
                DRAIN_TIMEOUT.as_secs(),
                rows.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut lags = Vec::with_capacity(rows.len());
    let (mut first, mut last, mut retried) = (i64::MAX, i64::MIN, 0);
    for row in &rows {
        let published: i64 = row.try_get("published_at")?;
        let done: i64 = row.try_get("updated_at")?;
        if row.try_get::<i64, _>("attempts")? > 1 {
            retried += 1;
        }
        lags.push((done - published) as f64 / 1e3);
        first = first.min(published);
        last = last.max(done);
    }
    lags.sort_by(f64::total_cmp);
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
    Ok(LagRound {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        per_second: rows.len() as f64 / ((last - first).max(1) as f64 / 1e3),
        retried,
    })
}
