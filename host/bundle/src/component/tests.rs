use super::*;

fn wasm(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

/// A component instantiating a module with one memory and one table `n` times.
fn instances(n: usize) -> Vec<u8> {
    let mut text = String::from("(component (core module $m (memory 0) (table 0 funcref))\n");
    for _ in 0..n {
        text.push_str("(core instance (instantiate $m))\n");
    }
    text.push(')');
    wasm(&text)
}

fn limits() -> ComponentLimits {
    ComponentLimits::default()
}

#[test]
fn counts_core_instances_memories_and_tables() {
    let usage = check_component(&instances(3), &limits()).unwrap();
    assert_eq!(
        usage,
        ComponentUsage {
            core_instances: 3,
            memories: 3,
            tables: 3
        }
    );
}

#[test]
fn too_many_core_instances_are_refused_naming_the_cap() {
    let limits = ComponentLimits {
        max_core_instances: 990,
        max_memories: 1000,
        max_tables: 1000,
        ..limits()
    };
    check_component(&instances(990), &limits).unwrap();
    let err = check_component(&instances(991), &limits).unwrap_err();
    assert_eq!(
        err,
        ComponentError::OverCap {
            what: "core instances",
            count: 991,
            max: 990,
            setting: "max_core_instances_per_component",
        }
    );
    assert_eq!(
        err.to_string(),
        "the component creates 991 core instances per instance; runners allow at most 990 \
         (operator setting `runtime.max_core_instances_per_component`)"
    );
}

#[test]
fn memories_and_tables_have_their_own_caps() {
    let limits = ComponentLimits {
        max_core_instances: 100,
        max_memories: 2,
        max_tables: 3,
        ..limits()
    };
    let err = check_component(&instances(3), &limits).unwrap_err();
    assert!(
        err.to_string().contains("max_memories_per_component"),
        "{err}"
    );
    let limits = ComponentLimits {
        max_memories: 100,
        ..limits
    };
    let err = check_component(&instances(4), &limits).unwrap_err();
    assert!(
        err.to_string().contains("max_tables_per_component"),
        "{err}"
    );
}

#[test]
fn imported_memories_and_tables_are_not_new() {
    let usage = check_component(
        &wasm(
            r#"(component
                (core module $a (memory (export "m") 1) (table (export "t") 1 funcref))
                (core module $b (import "a" "m" (memory 1)) (import "a" "t" (table 1 funcref)))
                (core instance $a (instantiate $a))
                (core instance (instantiate $b (with "a" (instance $a))))
            )"#,
        ),
        &limits(),
    )
    .unwrap();
    assert_eq!(
        usage,
        ComponentUsage {
            core_instances: 2,
            memories: 1,
            tables: 1
        }
    );
}

#[test]
fn nested_component_instantiations_multiply() {
    let usage = check_component(
        &wasm(
            r#"(component
                (component $inner
                    (core module $m (memory 0))
                    (core instance (instantiate $m))
                    (core instance (instantiate $m))
                    (core instance (instantiate $m))
                )
                (component $outer
                    (alias outer 1 $inner (component $again))
                    (instance (instantiate $again))
                    (instance (instantiate $again))
                )
                (instance (instantiate $outer))
                (instance (instantiate $outer))
                (instance (instantiate $inner))
            )"#,
        ),
        &ComponentLimits {
            max_core_instances: 1000,
            max_memories: 1000,
            ..limits()
        },
    )
    .unwrap();
    // 2 × (2 × 3) + 3
    assert_eq!(usage.core_instances, 15);
    assert_eq!(usage.memories, 15);
}

#[test]
fn a_defined_but_never_instantiated_module_costs_nothing() {
    let usage = check_component(
        &wasm("(component (core module (memory 1)) (component (core module (memory 1))))"),
        &limits(),
    )
    .unwrap();
    assert_eq!(usage, ComponentUsage::default());
}

#[test]
fn a_multi_memory_module_is_refused() {
    let err = check_component(
        &wasm(
            r#"(component
                (core module $m (memory 1) (memory 1))
                (core instance (instantiate $m))
            )"#,
        ),
        &limits(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a core module of the component defines 2 memories; runners allow 1 per core module \
         (multi-memory is not supported)"
    );
    // Even when never instantiated: the engine refuses the module when compiling.
    let err = check_component(
        &wasm("(component (core module (table 1 funcref) (table 1 funcref)))"),
        &limits(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ComponentError::PerModule { what: "tables", .. }),
        "{err}"
    );
}

#[test]
fn shared_memories_and_oversized_memories_are_refused() {
    let err = check_component(
        &wasm("(component (core module (memory 1 1 shared)))"),
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(err, ComponentError::Invalid(_)), "{err}");
    let err =
        check_component(&wasm("(component (core module (memory 4097)))"), &limits()).unwrap_err();
    assert!(err.to_string().contains("runtime.max_memory_mb"), "{err}");
    let err = check_component(
        &wasm("(component (core module (table 100001 funcref)))"),
        &limits(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("100000"), "{err}");
}

#[test]
fn features_the_engine_lacks_are_refused() {
    // Threads (atomics, shared memories) are off in the runners' engine.
    let err = check_component(
        &wasm(
            r#"(component
                (core module (memory 1) (func (drop (i32.atomic.load (i32.const 0)))))
            )"#,
        ),
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(err, ComponentError::Invalid(_)), "{err}");
    assert!(check_component(b"garbage", &limits()).is_err());
}

#[test]
fn instantiating_an_imported_component_is_refused() {
    let err = check_component(
        &wasm(
            r#"(component
                (import "c" (component $c))
                (instance (instantiate $c))
            )"#,
        ),
        &limits(),
    )
    .unwrap_err();
    assert_eq!(err, ComponentError::Unknowable);
}

#[test]
fn an_imported_module_counts_as_the_most_a_module_may_define() {
    let usage = check_component(
        &wasm(
            r#"(component
                (import "m" (core module $m))
                (core instance (instantiate $m))
            )"#,
        ),
        &limits(),
    )
    .unwrap();
    assert_eq!(
        usage,
        ComponentUsage {
            core_instances: 1,
            memories: 1,
            tables: 1
        }
    );
}
