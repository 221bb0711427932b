//! The runners' engine at publish and at run time: per-component caps on the instance pool,
//! components the engine cannot load refused at publish, and the code of a load failure.

use palisade_bundle::ComponentLimits;
use palisade_runtime::RuntimeConfig;

use crate::support::{Options, Platform, bundle, guest};

const SPIN: &str = "com.example.spin";

/// A component whose handler spins until the deadline, after creating `instances` core
/// instances (its own included) of which `memories` define a (0-page) memory and `tables`
/// a table.
fn spinning_component(instances: usize, memories: usize, tables: usize) -> Vec<u8> {
    let mut text = String::from(
        r#"(component
            (import "wasi:http/types@0.2.12" (instance $types
                (export "incoming-request" (type (sub resource)))
                (export "response-outparam" (type (sub resource)))
            ))
            (alias export $types "incoming-request" (type $req))
            (alias export $types "response-outparam" (type $out))
            (core module $main (func (export "handle") (param i32 i32) (loop $l (br $l))))
            (core module $mt (memory 0) (table 0 funcref))
            (core module $m (memory 0))
            (core module $t (table 0 funcref))
            (core module $e)
            (core instance $main (instantiate $main))
        "#,
    );
    for i in 1..instances {
        let module = match (i <= memories, i <= tables) {
            (true, true) => "$mt",
            (true, false) => "$m",
            (false, true) => "$t",
            (false, false) => "$e",
        };
        text.push_str(&format!("(core instance (instantiate {module}))\n"));
    }
    text.push_str(
        r#"
            (func $handle (param "request" (own $req)) (param "response-out" (own $out))
                (canon lift (core func $main "handle")))
            (instance $handler (export "handle" (func $handle)))
            (export "wasi:http/incoming-handler@0.2.12" (instance $handler))
        )"#,
    );
    wat::parse_str(&text).unwrap()
}

fn spin_manifest() -> serde_json::Value {
    serde_json::json!({
        "id": SPIN,
        "name": "Spin",
        "publisher": "Palisade tests",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": "spin.wasm",
        "api": { "endpoints": [ { "method": "GET", "path": "/spin" } ] },
        "limits": { "timeout_ms": 1500 }
    })
}

#[tokio::test]
async fn a_component_over_the_per_component_caps_is_refused_at_publish() {
    let platform = Platform::start().await;
    let caps = ComponentLimits::default();
    let over = caps.max_core_instances as usize + 1;
    let err = platform
        .publish_error(&bundle(&spin_manifest(), &spinning_component(over, 1, 1)))
        .await;
    assert!(
        err.contains(&format!("creates {over} core instances"))
            && err.contains("runtime.max_core_instances_per_component"),
        "{err}"
    );
    // The attack the caps answer: hundreds of core instances with a memory each.
    let err = platform
        .publish_error(&bundle(&spin_manifest(), &spinning_component(991, 990, 0)))
        .await;
    assert!(err.contains("max_core_instances_per_component"), "{err}");
    let memories = caps.max_memories as usize + 1;
    let err = platform
        .publish_error(&bundle(
            &spin_manifest(),
            &spinning_component(memories + 1, memories, 0),
        ))
        .await;
    assert!(err.contains("runtime.max_memories_per_component"), "{err}");
    // (The table cap has its own unit test: with one table per core module at most, the
    // default table cap is reached only together with the core-instance cap.)
}

/// The sample guests fit the default caps (they are what the defaults were measured on).
#[test]
fn the_sample_guests_fit_the_default_caps() {
    for name in [
        "hello",
        "storage-probe",
        "hostile",
        "raw-http",
        "counter",
        "metrics-probe",
        "secret-probe",
        "github-proxy",
        "egress-probe",
        "notes",
    ] {
        let usage = palisade_bundle::check_component(&guest(name), &ComponentLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}: {usage:?}");
    }
}

#[tokio::test]
async fn calls_using_their_whole_allowance_leave_other_tenants_served() {
    // A small pool: 6 component instances, 24 core instances, 12 memories, 24 tables. A
    // tenant may have 2 calls in flight, each taking at most 8 core instances, 4 memories
    // and 8 tables: 16, 8 and 16 at most, so every resource keeps room for other tenants.
    let options = Options {
        runtime: RuntimeConfig {
            max_instances: 6,
            max_core_instances_per_component: 8,
            max_memories_per_component: 4,
            max_tables_per_component: 8,
            ..RuntimeConfig::default()
        },
        runner: palisade_runner::RunnerConfig {
            max_in_flight_per_tenant: 2,
            ..Default::default()
        },
        ..Options::default()
    };
    let platform = Platform::start_with(options).await;
    // One more core instance than its allowance: refused.
    let err = platform
        .publish_error(&bundle(&spin_manifest(), &spinning_component(9, 4, 8)))
        .await;
    assert!(err.contains("max_core_instances_per_component"), "{err}");
    // Exactly its allowance: published, installed and run.
    platform
        .publish(&bundle(&spin_manifest(), &spinning_component(8, 4, 8)))
        .await;
    platform
        .registry
        .install(
            "mallory",
            SPIN,
            None,
            &[palisade_bundle::CapabilityKey::Log],
            Default::default(),
        )
        .await
        .unwrap();
    platform.install_hello("acme").await;
    assert_eq!(
        platform
            .call("acme", "com.example.hello", "/hello/ada")
            .await
            .status(),
        200
    );

    let spins = futures::future::join_all((0..3).map(|_| platform.call("mallory", SPIN, "/spin")));
    let mut spins = std::pin::pin!(spins);
    let meanwhile = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for _ in 0..3 {
            let calls = (0..2).map(|_| platform.call("acme", "com.example.hello", "/hello/ada"));
            for response in futures::future::join_all(calls).await {
                assert_eq!(response.status(), 200);
            }
        }
    };
    tokio::select! {
        biased;
        _ = &mut spins => panic!("the spinning calls ended before the other tenant was served"),
        () = meanwhile => {}
    }
    let mut statuses: Vec<u16> = spins.await.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    // Two spun until their deadline; the third was over the tenant's in-flight cap.
    assert_eq!(statuses, [429, 504, 504]);
}

#[tokio::test]
async fn a_multi_memory_component_is_refused_at_publish_with_the_reason() {
    let platform = Platform::start().await;
    let component = wat::parse_str(
        r#"(component
            (core module $m (memory 1) (memory 1))
            (core instance (instantiate $m))
        )"#,
    )
    .unwrap();
    let err = platform
        .publish_error(&bundle(&spin_manifest(), &component))
        .await;
    assert!(
        err.contains("defines 2 memories") && err.contains("multi-memory"),
        "{err}"
    );
}

#[tokio::test]
async fn a_component_this_runner_cannot_load_is_502_load_failed() {
    // Published under the registry's (default) caps; this runner allows fewer core
    // instances, as after an operator lowered the cap.
    let platform = Platform::start_with(Options {
        runtime: RuntimeConfig {
            max_instances: 6,
            ..RuntimeConfig::default()
        },
        ..Default::default()
    })
    .await;
    let platform = Platform {
        registry: platform
            .registry
            .clone()
            .with_component_limits(ComponentLimits {
                max_core_instances: 100,
                ..ComponentLimits::default()
            }),
        ..platform
    };
    platform
        .publish(&bundle(&spin_manifest(), &spinning_component(60, 0, 0)))
        .await;
    platform
        .registry
        .install(
            "acme",
            SPIN,
            None,
            &[palisade_bundle::CapabilityKey::Log],
            Default::default(),
        )
        .await
        .unwrap();
    let response = platform.call("acme", SPIN, "/spin").await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "load_failed", "{body}");
}
