//! Behaviour of the series store: recording, bounds, kinds, separation and exposition.

use super::*;

fn store(max: usize) -> ExtensionMetrics {
    ExtensionMetrics::new(MetricsConfig {
        max_series_per_install: max,
    })
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// The exposition line of one sample, if present (`name{labels} value`).
fn sample_line(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .map(str::to_owned)
}

#[test]
fn counters_accumulate_and_are_exported_with_host_labels() {
    let metrics = store(10);
    let install = metrics.install("acme", "com.example.counter");
    install
        .counter_add("page_hits_total", labels(&[("page", "home")]), 2)
        .unwrap();
    install
        .counter_add("page_hits", labels(&[("page", "home")]), 1)
        .unwrap();
    let text = metrics.encode();
    assert!(
        text.contains("# TYPE ext_com_example_counter__page_hits counter"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ext_com_example_counter__page_hits_total{tenant="acme",extension="com.example.counter",page="home"} 3"#
        ),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(install.series_count(), 1);
}

#[test]
fn label_order_does_not_make_a_new_series() {
    let metrics = store(10);
    let install = metrics.install("acme", "ext.a");
    install
        .counter_add("x", labels(&[("b", "2"), ("a", "1")]), 1)
        .unwrap();
    install
        .counter_add("x", labels(&[("a", "1"), ("b", "2")]), 1)
        .unwrap();
    assert_eq!(install.series_count(), 1);
    let text = metrics.encode();
    assert!(
        text.contains(r#"ext_ext_a__x_total{tenant="acme",extension="ext.a",a="1",b="2"} 2"#),
        "{text}"
    );
}

#[test]
fn gauges_keep_the_last_value() {
    let metrics = store(10);
    let install = metrics.install("acme", "ext.a");
    install.gauge_set("queue_depth", vec![], 5.0).unwrap();
    install.gauge_set("queue_depth", vec![], -1.5).unwrap();
    let text = metrics.encode();
    assert!(
        text.contains("# TYPE ext_ext_a__queue_depth gauge"),
        "{text}"
    );
    assert!(
        text.contains(r#"ext_ext_a__queue_depth{tenant="acme",extension="ext.a"} -1.5"#),
        "{text}"
    );
}

#[test]
fn histograms_use_the_default_buckets_and_ignore_non_finite_values() {
    let metrics = store(10);
    let install = metrics.install("acme", "ext.a");
    install
        .histogram_observe("body_bytes", vec![], 7.0)
        .unwrap();
    install
        .histogram_observe("body_bytes", vec![], 2000.0)
        .unwrap();
    install
        .histogram_observe("body_bytes", vec![], f64::NAN)
        .unwrap();
    install
        .histogram_observe("body_bytes", vec![], f64::INFINITY)
        .unwrap();
    let text = metrics.encode();
    assert!(
        text.contains("# TYPE ext_ext_a__body_bytes histogram"),
        "{text}"
    );
    let series = r#"tenant="acme",extension="ext.a""#;
    assert!(
        text.contains(&format!("ext_ext_a__body_bytes_sum{{{series}}} 2007.0")),
        "{text}"
    );
    assert!(
        text.contains(&format!("ext_ext_a__body_bytes_count{{{series}}} 2")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"ext_ext_a__body_bytes_bucket{{le="5.0",{series}}} 0"#
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"ext_ext_a__body_bytes_bucket{{le="10.0",{series}}} 1"#
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"ext_ext_a__body_bytes_bucket{{le="10000.0",{series}}} 2"#
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"ext_ext_a__body_bytes_bucket{{le="+Inf",{series}}} 2"#
        )),
        "{text}"
    );
    let buckets = text.matches("ext_ext_a__body_bytes_bucket{").count();
    assert_eq!(buckets, HISTOGRAM_BUCKETS.len() + 1);
}

#[test]
fn a_name_reused_with_another_kind_is_a_kind_mismatch() {
    let metrics = store(10);
    let install = metrics.install("acme", "ext.a");
    install.counter_add("jobs_total", vec![], 1).unwrap();
    assert_eq!(
        install.gauge_set("jobs", vec![], 1.0),
        Err(MetricError::KindMismatch)
    );
    assert_eq!(
        install.histogram_observe("jobs", labels(&[("new", "series")]), 1.0),
        Err(MetricError::KindMismatch)
    );
    install.gauge_set("temperature", vec![], 1.0).unwrap();
    assert_eq!(
        install.counter_add("temperature", vec![], 1),
        Err(MetricError::KindMismatch)
    );
    assert_eq!(install.series_count(), 2);
}

#[test]
fn invalid_samples_are_refused_and_create_nothing() {
    let metrics = store(10);
    let install = metrics.install("acme", "ext.a");
    assert!(matches!(
        install.counter_add("Bad-Name", vec![], 1),
        Err(MetricError::InvalidName(message)) if message.contains("`Bad-Name`")
    ));
    assert!(matches!(
        install.counter_add("ok", labels(&[("tenant", "other")]), 1),
        Err(MetricError::InvalidLabel(message)) if message.contains("`tenant` is reserved")
    ));
    assert_eq!(install.series_count(), 0);
    assert!(!metrics.encode().contains("ext_"));
}

#[test]
fn the_series_bound_drops_new_series_and_counts_them() {
    let metrics = store(2);
    let install = metrics.install("acme", "ext.a");
    install.counter_add("a", vec![], 1).unwrap();
    install.gauge_set("b", vec![], 1.0).unwrap();
    assert_eq!(
        install.counter_add("a", labels(&[("k", "new")]), 1),
        Err(MetricError::TooManySeries)
    );
    assert_eq!(
        install.histogram_observe("c", vec![], 1.0),
        Err(MetricError::TooManySeries)
    );
    // Existing series keep recording.
    install.counter_add("a", vec![], 1).unwrap();
    install.gauge_set("b", vec![], 3.0).unwrap();
    assert_eq!(install.series_count(), 2);
    assert_eq!(install.dropped_samples(), 2);

    let text = metrics.encode();
    assert!(
        text.contains(
            r#"palisade_extension_series_dropped_total{tenant="acme",extension="ext.a"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"ext_ext_a__a_total{tenant="acme",extension="ext.a"} 2"#),
        "{text}"
    );
    assert!(!text.contains("ext_ext_a__c"), "{text}");

    // The bound is per install: another tenant's install is unaffected.
    let other = metrics.install("globex", "ext.a");
    other.counter_add("a", labels(&[("k", "new")]), 1).unwrap();
    assert_eq!(other.dropped_samples(), 0);
}

#[test]
fn handles_of_one_install_share_its_bound() {
    let metrics = store(1);
    metrics
        .install("acme", "ext.a")
        .counter_add("a", vec![], 1)
        .unwrap();
    let again = metrics.install("acme", "ext.a");
    assert_eq!(again.series_count(), 1);
    assert_eq!(
        again.counter_add("b", vec![], 1),
        Err(MetricError::TooManySeries)
    );
}

#[test]
fn the_dropped_counter_starts_at_zero_for_each_install() {
    let metrics = store(10);
    metrics.install("acme", "ext.a");
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"palisade_extension_series_dropped_total{tenant="acme",extension="ext.a"} 0"#
        ),
        "{text}"
    );
}

#[test]
fn tenants_and_extensions_have_separate_series() {
    let metrics = store(10);
    let acme = metrics.install("acme", "ext.a");
    let globex = metrics.install("globex", "ext.a");
    let other_ext = metrics.install("acme", "ext.b");
    acme.counter_add("hits", vec![], 1).unwrap();
    globex.counter_add("hits", vec![], 5).unwrap();
    other_ext.counter_add("hits", vec![], 7).unwrap();
    let text = metrics.encode();
    assert!(
        text.contains(r#"ext_ext_a__hits_total{tenant="acme",extension="ext.a"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ext_ext_a__hits_total{tenant="globex",extension="ext.a"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ext_ext_b__hits_total{tenant="acme",extension="ext.b"} 7"#),
        "{text}"
    );
    assert_eq!(text.matches("# TYPE ext_ext_a__hits counter").count(), 1);
    assert_eq!(text.matches("# TYPE ext_ext_b__hits counter").count(), 1);
}

#[test]
fn label_values_are_escaped_in_the_exposition() {
    let metrics = store(10);
    let install = metrics.install("acme", "ext.a");
    install
        .counter_add("x", labels(&[("q", r#"say "hi" \o/"#)]), 1)
        .unwrap();
    let line = sample_line(&metrics.encode(), "ext_ext_a__x_total{").unwrap();
    assert_eq!(
        line,
        r#"ext_ext_a__x_total{tenant="acme",extension="ext.a",q="say \"hi\" \\o/"} 1"#
    );
}

#[test]
fn concurrent_calls_never_exceed_the_bound() {
    let metrics = store(50);
    let install = metrics.install("acme", "ext.a");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let install = install.clone();
            std::thread::spawn(move || {
                let mut refused = 0;
                for i in 0..40 {
                    let labels = vec![("i".to_owned(), format!("{t}-{i}"))];
                    if install.counter_add("c", labels, 1).is_err() {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let refused: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(install.series_count(), 50);
    assert_eq!(refused, 160 - 50);
    assert_eq!(install.dropped_samples(), refused);
    let text = metrics.encode();
    assert_eq!(text.matches("ext_ext_a__c_total{").count(), 50);
}

#[test]
fn encode_families_leaves_out_the_eof_marker() {
    let metrics = store(10);
    metrics
        .install("acme", "ext.a")
        .gauge_set("g", vec![], 1.0)
        .unwrap();
    let mut out = String::new();
    metrics.encode_families(&mut out);
    assert!(out.contains("ext_ext_a__g{"));
    assert!(!out.contains("# EOF"));
}

#[test]
fn the_config_has_a_documented_default_and_refuses_unknown_fields() {
    assert_eq!(MetricsConfig::default().max_series_per_install, 1000);
    let parsed: MetricsConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, MetricsConfig::default());
    let err = serde_json::from_str::<MetricsConfig>(r#"{"max_series": 1}"#).unwrap_err();
    assert!(err.to_string().contains("max_series"), "{err}");
}

#[test]
fn errors_map_to_the_wit_variants() {
    assert!(matches!(
        WitError::from(MetricError::InvalidName("n".into())),
        WitError::InvalidName(m) if m == "n"
    ));
    assert!(matches!(
        WitError::from(MetricError::InvalidLabel("l".into())),
        WitError::InvalidLabel(m) if m == "l"
    ));
    assert!(matches!(
        WitError::from(MetricError::TooManySeries),
        WitError::TooManySeries
    ));
    assert!(matches!(
        WitError::from(MetricError::KindMismatch),
        WitError::KindMismatch
    ));
}

#[test]
fn a_missing_call_state_is_a_trap_not_a_guest_error() {
    let mut view = Linked::<MetricsState>::new(None, "palisade:extension/metrics");
    let error = metrics::Host::counter_add(&mut view, "x".into(), vec![], 1).unwrap_err();
    assert_eq!(
        error.to_string(),
        "palisade:extension/metrics is linked but the call has no state for it"
    );

    let metrics = store(10);
    let mut state = MetricsState::new(metrics.install("acme", "ext.a"));
    let mut view = Linked::new(Some(&mut state), "palisade:extension/metrics");
    let label = Label {
        name: "page".into(),
        value: "home".into(),
    };
    assert!(matches!(
        metrics::Host::counter_add(&mut view, "x".into(), vec![label], 1),
        Ok(Ok(()))
    ));
    assert!(matches!(
        metrics::Host::gauge_set(&mut view, "x".into(), vec![], 1.0),
        Ok(Err(WitError::KindMismatch))
    ));
    assert!(matches!(
        metrics::Host::histogram_observe(&mut view, "Bad".into(), vec![], 1.0),
        Ok(Err(WitError::InvalidName(_)))
    ));
}

#[test]
fn one_extension_can_neither_squat_a_name_nor_change_its_kind_for_another() {
    let metrics = store(10);
    let first = metrics.install("acme", "com.example.first");
    let second = metrics.install("acme", "com.example.second");
    first.counter_add("jobs_total", vec![], 1).unwrap();
    // The second extension's `jobs` is its own metric, of whatever kind it likes.
    second.gauge_set("jobs", vec![], 2.5).unwrap();
    second.histogram_observe("latency", vec![], 0.2).unwrap();
    first.gauge_set("latency", vec![], 1.0).unwrap();
    // Within one extension a name keeps its kind, across installs too.
    let other_tenant = metrics.install("globex", "com.example.second");
    assert_eq!(
        other_tenant.counter_add("jobs", vec![], 1),
        Err(MetricError::KindMismatch)
    );
    let text = metrics.encode();
    for line in [
        "# TYPE ext_com_example_first__jobs counter",
        r#"ext_com_example_first__jobs_total{tenant="acme",extension="com.example.first"} 1"#,
        "# TYPE ext_com_example_second__jobs gauge",
        r#"ext_com_example_second__jobs{tenant="acme",extension="com.example.second"} 2.5"#,
        "# TYPE ext_com_example_second__latency histogram",
        "# TYPE ext_com_example_first__latency gauge",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

#[test]
fn extension_prefixes_never_meet() {
    assert_eq!(
        export_prefix("com.example.counter"),
        "ext_com_example_counter__"
    );
    assert_eq!(
        export_prefix("com.example.my-ext"),
        "ext_com_example_my_0ext__"
    );
    // Ids that a plain `.`/`-` → `_` mapping would merge stay apart.
    let ids = [
        "com.example.a-b",
        "com.example.a.b",
        "com.example-a.b",
        "com.example.a0b",
        "com.example.a--b",
        "com.example.a-0b",
        "com.ex.ample",
        "com.exa.mple",
        "Com.Example",
        "com_example",
        "x",
    ];
    let prefixes: std::collections::BTreeSet<_> = ids.iter().map(|id| export_prefix(id)).collect();
    assert_eq!(prefixes.len(), ids.len(), "{prefixes:?}");
    for (id, prefix) in ids.iter().zip(ids.iter().map(|id| export_prefix(id))) {
        let body = &prefix[EXPORT_PREFIX.len()..prefix.len() - 2];
        assert!(
            !body.contains("__") && !body.starts_with('_') && !body.ends_with('_'),
            "{id}: {prefix}"
        );
    }
    // So (extension, name) pairs never share a family: the first `__` ends the extension.
    let metrics = store(10);
    metrics
        .install("acme", "com.example")
        .counter_add("counter__hits", vec![], 1)
        .unwrap();
    metrics
        .install("acme", "com.example.counter")
        .gauge_set("hits", vec![], 1.0)
        .unwrap();
    let text = metrics.encode();
    assert!(
        text.contains("# TYPE ext_com_example__counter__hits counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ext_com_example_counter__hits gauge"),
        "{text}"
    );
}

#[test]
fn names_whose_series_would_collide_in_the_exposition_are_refused() {
    let metrics = store(20);
    let install = metrics.install("acme", "ext.a");
    install.histogram_observe("x", vec![], 1.0).unwrap();
    for suffix in ["_count", "_sum", "_bucket", "_created"] {
        let name = format!("x{suffix}");
        let refused = install.gauge_set(&name, vec![], 1.0);
        assert!(
            matches!(&refused, Err(MetricError::InvalidName(m))
                if m.contains(&format!("the `{name}` series of histogram `x`"))),
            "{name}: {refused:?}"
        );
    }
    assert!(matches!(
        install.counter_add("x_count", vec![], 1),
        Err(MetricError::InvalidName(_))
    ));
    // The other way round: a gauge first, then a histogram whose series would meet it.
    install.gauge_set("y_sum", vec![], 1.0).unwrap();
    let refused = install.histogram_observe("y", vec![], 1.0);
    assert!(
        matches!(&refused, Err(MetricError::InvalidName(m))
            if m.contains("histogram name `y` (its series `y_sum`)") && m.contains("gauge `y_sum`")),
        "{refused:?}"
    );
    // A counter's `_created` and `_total` belong to it.
    install.counter_add("jobs", vec![], 1).unwrap();
    assert!(matches!(
        install.gauge_set("jobs_created", vec![], 1.0),
        Err(MetricError::InvalidName(_))
    ));
    // Refused names create nothing; another extension may use them.
    assert_eq!(install.series_count(), 3);
    let text = metrics.encode();
    assert!(!text.contains("ext_ext_a__y{"), "{text}");
    assert!(!text.contains("# TYPE ext_ext_a__x_count"), "{text}");
    metrics
        .install("acme", "ext.b")
        .gauge_set("x_count", vec![], 1.0)
        .unwrap();
}
