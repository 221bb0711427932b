//! Event dispatchers as real `palisade dispatcher` processes on one registry (SQLite, or
//! PostgreSQL with `PALISADE_TEST_POSTGRES_URL`): a process SIGKILLed mid-delivery (the one
//! taking over serves its `/metrics`), two
//! processes sharing 1,000 events while one is killed, three firing one schedule.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use palisade_bundle::CapabilityKey;
use palisade_registry::{DeliveryState, NewEvent, Registry};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::process::Server;
use crate::support::Seeder;

const PROBE: &str = "com.example.event-probe";
const APPROVED: &[CapabilityKey] = &[CapabilityKey::Log, CapabilityKey::Storage];

/// A data directory whose registry has the event probe installed, and the configuration
/// file its dispatcher processes read.
struct Site {
    dir: TempDir,
    database_url: String,
    seeder: Seeder,
    config: PathBuf,
}

impl Site {
    /// The probe (changed by `edit`) installed for each of `tenants`; `config` is the
    /// processes' configuration file.
    async fn new(tenants: &[&str], edit: impl FnOnce(&mut Value), config: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let database_url = palisade_registry::testing::database_url(dir.path());
        let seeder = Seeder::open(&database_url, dir.path().join("objects")).await;
        let path = format!(
            "{}/guests/event-probe/manifest.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut manifest: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        edit(&mut manifest);
        seeder
            .install(tenants[0], &manifest, "event-probe", APPROVED)
            .await;
        for tenant in &tenants[1..] {
            seeder
                .registry
                .install(tenant, PROBE, None, APPROVED, Default::default())
                .await
                .unwrap();
        }
        let config_path = dir.path().join("palisade.toml");
        std::fs::write(&config_path, config).unwrap();
        Site {
            dir,
            database_url,
            seeder,
            config: config_path,
        }
    }

    fn registry(&self) -> &Registry {
        &self.seeder.registry
    }

    /// Starts `palisade dispatcher` on the site, its log in the directory.
    fn dispatcher(&self, name: &'static str) -> Server {
        let log = self.dir.path().join(format!("{name}.log"));
        let config = self.config.to_str().unwrap();
        let args = ["--config", config, "dispatcher"];
        // A dispatcher serves nothing: the address is never used.
        Server::spawn(
            name,
            self.dir.path(),
            &self.database_url,
            "127.0.0.1:9",
            log,
            "warn",
            &args,
        )
    }

    /// Starts `palisade dispatcher --metrics-listen` on the site; also returns the
    /// address its `/metrics` is served on.
    fn dispatcher_with_metrics(&self, name: &'static str) -> (Server, String) {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let log = self.dir.path().join(format!("{name}.log"));
        let config = self.config.to_str().unwrap();
        let args = ["--config", config, "dispatcher", "--metrics-listen", &addr];
        let server = Server::spawn(
            name,
            self.dir.path(),
            &self.database_url,
            &addr,
            log,
            "warn",
            &args,
        );
        (server, addr)
    }

    async fn publish(&self, tenant: &str, key: &str, payload: &str) {
        let event = NewEvent {
            tenant_id: tenant,
            topic: "ticket.created",
            key,
            payload,
        };
        self.registry().publish_event(event).await.unwrap();
    }

    async fn count(&self, state: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM extension_event_delivery WHERE state = $1")
            .bind(state)
            .fetch_one(self.registry().pool())
            .await
            .unwrap()
    }

    /// The keys the probes stored (`{event key}/{attempt}`), with their install.
    async fn records(&self) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT install_id, key FROM extension_storage WHERE namespace = 'events' ORDER BY key",
        )
        .fetch_all(self.registry().pool())
        .await
        .unwrap()
    }

    /// Waits until `done` holds, failing with `process`'s log after `limit`.
    async fn wait_for<F: std::future::Future<Output = bool>>(
        &self,
        limit: Duration,
        process: &Server,
        mut done: impl FnMut() -> F,
    ) {
        let deadline = Instant::now() + limit;
        while !done().await {
            assert!(
                Instant::now() < deadline,
                "timed out\n{}",
                process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// A process is killed (SIGKILL) while its guest runs; a second process delivers the event
// once the first one's lease has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatcher_process_leaves_its_delivery_to_another() {
    // Calls end at 5 s; a claim holds its delivery for 6 s.
    let config =
        "[runtime]\nmax_timeout_ms = 5000\n[events]\nlease_ms = 6000\npoll_interval_ms = 100\n";
    let site = Site::new(&["acme"], |_| {}, config).await;
    site.publish("acme", "t-1", r#"{"sleep_ms": 60000, "sleep_attempts": 1}"#)
        .await;

    let mut doomed = site.dispatcher("dispatcher-a");
    // The guest records the attempt before it sleeps: then the delivery is under way.
    site.wait_for(Duration::from_secs(60), &doomed, || async {
        !site.records().await.is_empty()
    })
    .await;
    doomed.kill();
    let claimed = site
        .registry()
        .list_deliveries("acme", None, 10)
        .await
        .unwrap();
    assert_eq!(
        (claimed[0].attempts, claimed[0].state),
        (1, DeliveryState::Pending)
    );

    let (mut survivor, metrics) = site.dispatcher_with_metrics("dispatcher-b");
    site.wait_for(Duration::from_secs(60), &survivor, || async {
        site.count("delivered").await == 1
    })
    .await;
    // The survivor's own series count its attempt (just after recording it).
    let line = r#"palisade_runner_event_delivery_attempts_total{result="delivered"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scraped = reqwest::get(format!("http://{metrics}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if scraped.lines().any(|l| l == line) {
            break;
        }
        assert!(Instant::now() < deadline, "missing `{line}` in:\n{scraped}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = site
        .registry()
        .list_deliveries("acme", None, 10)
        .await
        .unwrap();
    assert_eq!(delivered[0].attempts, 2);
    assert_eq!(delivered[0].last_status, Some(204));
    // The killed process recorded nothing of its attempt: the one row is attempt 2's.
    let rows = site
        .registry()
        .recent_executions("acme", None, 10)
        .await
        .unwrap();
    let attempts: Vec<Option<u32>> = rows.iter().map(|row| row.attempt).collect();
    assert_eq!(attempts, [Some(2)]);
    assert_eq!(survivor.terminate().await.code(), Some(0));
}

// On PostgreSQL: two processes share 1,000 events of ten tenants; one is SIGKILLed a
// quarter of the way. Nothing is lost, nothing is delivered more than twice, and only
// attempts the killed process had under way can be delivered twice; the test counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatcher_processes_share_a_thousand_events_and_one_is_killed() {
    if palisade_registry::testing::postgres_url_or_skip().is_none() {
        return;
    }
    const PER_TENANT: usize = 100;
    let tenants: Vec<String> = (0..10).map(|t| format!("t{t:02}")).collect();
    let tenants: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let config =
        "[runtime]\nmax_timeout_ms = 5000\n[events]\nlease_ms = 6000\npoll_interval_ms = 50\n";
    let site = Site::new(&tenants, |_| {}, config).await;
    for i in 0..PER_TENANT {
        for tenant in &tenants {
            site.publish(tenant, &format!("e{i:03}"), "{}").await;
        }
    }
    let total = i64::try_from(tenants.len() * PER_TENANT).unwrap();
    assert_eq!(site.count("pending").await, total);

    let mut doomed = site.dispatcher("dispatcher-a");
    let survivor = site.dispatcher("dispatcher-b");
    let limit = Duration::from_secs(240);
    site.wait_for(limit, &doomed, || async {
        site.count("delivered").await >= total / 4
    })
    .await;
    doomed.kill();
    site.wait_for(limit, &survivor, || async {
        site.count("delivered").await == total
    })
    .await;
    assert_eq!(site.count("dead").await, 0);

    // What the guests saw: one record per (install, event, attempt).
    let mut seen: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for (install, key) in site.records().await {
        let (event, _attempt) = key.rsplit_once('/').unwrap();
        *seen.entry((install, event.to_owned())).or_default() += 1;
    }
    let once = seen.values().filter(|n| **n == 1).count();
    let twice = seen.values().filter(|n| **n == 2).count();
    eprintln!("delivered once: {once}, twice: {twice}");
    assert_eq!(seen.len(), tenants.len() * PER_TENANT, "events lost");
    assert_eq!(
        once + twice,
        seen.len(),
        "an event was delivered more than twice"
    );
    // Only attempts the killed process had claimed can have run twice: one batch at most.
    assert!(twice <= 16, "{twice} events delivered twice");
}

// Three processes and an `@every 1s` schedule: every slot fires once, whichever process
// gets to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dispatcher_processes_fire_each_slot_once() {
    let every_second = |manifest: &mut Value| {
        manifest["schedules"] = json!([{"cron": "@every 1s", "path": "/on/tick"}]);
    };
    let site = Site::new(&["acme"], every_second, "[events]\npoll_interval_ms = 50\n").await;
    let mut dispatchers: Vec<Server> = ["dispatcher-a", "dispatcher-b", "dispatcher-c"]
        .into_iter()
        .map(|name| site.dispatcher(name))
        .collect();
    site.wait_for(Duration::from_secs(120), &dispatchers[0], || async {
        site.count("delivered").await >= 5
    })
    .await;
    for dispatcher in &mut dispatchers {
        assert_eq!(dispatcher.terminate().await.code(), Some(0));
    }

    // One firing (an event keyed by its slot) per slot, each delivered once.
    let slots: Vec<String> = sqlx::query_scalar(
        "SELECT event_key FROM extension_event WHERE topic = 'schedule' ORDER BY event_key",
    )
    .fetch_all(site.registry().pool())
    .await
    .unwrap();
    assert!(slots.len() >= 5, "{slots:?}");
    let records = site.records().await;
    let delivered: Vec<&str> = records
        .iter()
        .map(|(_, key)| key.rsplit_once('/').unwrap())
        .inspect(|(_, attempt)| assert_eq!(*attempt, "001", "{records:?}"))
        .map(|(slot, _)| slot)
        .collect();
    let mut unique = delivered.clone();
    unique.dedup();
    assert_eq!(unique, delivered, "a slot was delivered twice: {records:?}");
    // Every slot fired is a whole second, and none was fired twice.
    let mut seconds: Vec<i64> = slots
        .iter()
        .map(|key| key.rsplit_once(':').unwrap().1.parse::<i64>().unwrap())
        .collect();
    assert!(seconds.iter().all(|ms| ms % 1000 == 0), "{seconds:?}");
    seconds.dedup();
    assert_eq!(seconds.len(), slots.len(), "{slots:?}");
}
