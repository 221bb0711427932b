//! The `capabilities` section of a manifest and the keys a tenant approves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an extension asks the host for. Anything not listed is never linked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    /// Structured logging (`palisade:extension/log`); on unless set to `false`.
    pub log: bool,
    /// Application metrics (`palisade:extension/metrics`).
    pub metrics: bool,
    /// Key/value storage in the named namespaces (`palisade:extension/storage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageCapability>,
    /// Names of the secrets the extension may read (`palisade:extension/secrets`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Outgoing HTTP to the allow-listed origins (`wasi:http/outgoing-handler`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCapability>,
    /// A cache of values with a time to live, in the runner's memory
    /// (`palisade:extension/cache`).
    pub cache: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            log: true,
            metrics: false,
            storage: None,
            secrets: Vec::new(),
            http: None,
            cache: false,
        }
    }
}

/// The `storage` capability: which namespaces, and an optional size cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageCapability {
    /// Namespaces the extension may read and write; every other one is denied.
    pub namespaces: Vec<String>,
    /// Upper bound on the bytes stored per install, if the extension wants a lower one than
    /// the operator's quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// The `http` capability: origins the extension may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCapability {
    /// Origins `scheme://host[:port]`; a host may start with `*.` to allow its subdomains.
    pub allow: Vec<String>,
}

/// One capability as a whole, as a tenant approves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapabilityKey {
    /// `capabilities.log`.
    Log,
    /// `capabilities.metrics`.
    Metrics,
    /// `capabilities.storage`.
    Storage,
    /// `capabilities.secrets`.
    Secrets,
    /// `capabilities.http`.
    Http,
    /// `capabilities.cache`.
    Cache,
}

/// A string that names no capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability `{0}`; expected one of {names}", names = capability_names())]
pub struct UnknownCapability(pub String);

fn capability_names() -> String {
    CAPABILITIES.map(|spec| spec.name).join(", ")
}

/// Everything the platform knows about one capability by name, in one place: the manifest
/// parser, the import check, the runtime's grant sets and linker, and the SDK's features
/// all read this table, so no other list of capability names is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilitySpec {
    /// The capability.
    pub key: CapabilityKey,
    /// Its key under the manifest's `capabilities` (and in a tenant's approval).
    pub name: &'static str,
    /// The interfaces it links, as `package/interface`, without a version.
    pub interfaces: &'static [&'static str],
    /// The Rust SDK feature that binds those interfaces; `None` when the SDK always binds
    /// them.
    pub sdk_feature: Option<&'static str>,
}

/// The capabilities, in manifest order. A new capability starts with a row here (see
/// `docs/adding-a-capability.md`).
pub const CAPABILITIES: [CapabilitySpec; 6] = [
    CapabilitySpec {
        key: CapabilityKey::Log,
        name: "log",
        interfaces: &["palisade:extension/log"],
        sdk_feature: None,
    },
    CapabilitySpec {
        key: CapabilityKey::Metrics,
        name: "metrics",
        interfaces: &["palisade:extension/metrics"],
        sdk_feature: Some("metrics"),
    },
    CapabilitySpec {
        key: CapabilityKey::Storage,
        name: "storage",
        interfaces: &["palisade:extension/storage"],
        sdk_feature: Some("storage"),
    },
    CapabilitySpec {
        key: CapabilityKey::Secrets,
        name: "secrets",
        interfaces: &["palisade:extension/secrets"],
        sdk_feature: Some("secrets"),
    },
    CapabilitySpec {
        key: CapabilityKey::Http,
        name: "http",
        interfaces: &["wasi:http/outgoing-handler"],
        sdk_feature: Some("http-client"),
    },
    CapabilitySpec {
        key: CapabilityKey::Cache,
        name: "cache",
        interfaces: &["palisade:extension/cache"],
        sdk_feature: Some("cache"),
    },
];

impl CapabilityKey {
    /// Every capability key, in manifest order.
    pub const ALL: [CapabilityKey; CAPABILITIES.len()] = {
        let mut all = [CapabilityKey::Log; CAPABILITIES.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = CAPABILITIES[i].key;
            i += 1;
        }
        all
    };

    /// The capability's row in [`CAPABILITIES`].
    pub fn spec(self) -> &'static CapabilitySpec {
        // The table is in declaration order of the enum (checked by a test).
        &CAPABILITIES[self as usize]
    }

    /// The manifest key (the table's `name`).
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The capability's bit in a set of capabilities (at most 32 capabilities).
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// The capability that links `interface` (`package/interface`, no version), if any.
    pub fn for_interface(interface: &str) -> Option<CapabilityKey> {
        CAPABILITIES
            .iter()
            .find(|spec| spec.interfaces.contains(&interface))
            .map(|spec| spec.key)
    }
}

impl fmt::Display for CapabilityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CapabilityKey {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CapabilityKey::ALL
            .into_iter()
            .find(|key| key.as_str() == s)
            .ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

impl Capabilities {
    /// No capability at all (not even `log`).
    pub fn none() -> Self {
        Self {
            log: false,
            ..Self::default()
        }
    }

    /// The capabilities this section requests, in manifest order. `secrets` counts as
    /// requested when at least one name is listed.
    pub fn keys(&self) -> Vec<CapabilityKey> {
        CapabilityKey::ALL
            .into_iter()
            .filter(|key| self.requests(*key))
            .collect()
    }

    /// Whether this section requests `key`.
    pub fn requests(&self, key: CapabilityKey) -> bool {
        match key {
            CapabilityKey::Log => self.log,
            CapabilityKey::Metrics => self.metrics,
            CapabilityKey::Storage => self.storage.is_some(),
            CapabilityKey::Secrets => !self.secrets.is_empty(),
            CapabilityKey::Http => self.http.is_some(),
            CapabilityKey::Cache => self.cache,
        }
    }

    /// What this section grants of `key` beyond `previous`, one line per item: a new
    /// storage namespace, a higher storage cap, a new secret name or a new HTTP origin
    /// (compared as written: a new origin is listed even if an old wildcard covers it).
    /// A capability that is on or off has no items.
    pub fn widening(&self, previous: &Capabilities, key: CapabilityKey) -> Vec<String> {
        let mut out = Vec::new();
        match key {
            CapabilityKey::Log | CapabilityKey::Metrics | CapabilityKey::Cache => {}
            CapabilityKey::Storage => {
                let (old, new) = (previous.storage.as_ref(), self.storage.as_ref());
                for namespace in new.map(|s| s.namespaces.as_slice()).unwrap_or_default() {
                    if !old.is_some_and(|s| s.namespaces.contains(namespace)) {
                        out.push(format!("storage namespace `{namespace}`"));
                    }
                }
                // No `max_bytes` means the operator's quota, the most there is.
                let old_cap = old.map(|s| s.max_bytes.unwrap_or(u64::MAX));
                let new_cap = new.and_then(|s| s.max_bytes).unwrap_or(u64::MAX);
                if old_cap.is_some_and(|old_cap| new_cap > old_cap) {
                    let text = new
                        .and_then(|s| s.max_bytes)
                        .map_or_else(|| "the operator's quota".to_owned(), |b| b.to_string());
                    out.push(format!("storage max_bytes up to {text}"));
                }
            }
            CapabilityKey::Secrets => {
                for name in &self.secrets {
                    if !previous.secrets.contains(name) {
                        out.push(format!("secret `{name}`"));
                    }
                }
            }
            CapabilityKey::Http => {
                let old: &[String] = previous.http.as_ref().map_or(&[], |h| h.allow.as_slice());
                for origin in self.http.as_ref().map_or(&[][..], |h| h.allow.as_slice()) {
                    if !old.contains(origin) {
                        out.push(format!("http origin `{origin}`"));
                    }
                }
            }
        }
        out
    }

    /// The part of this section that `approved` covers; everything else is dropped.
    pub fn restrict_to(&self, approved: &[CapabilityKey]) -> Capabilities {
        let ok = |key| approved.contains(&key);
        Capabilities {
            log: self.log && ok(CapabilityKey::Log),
            metrics: self.metrics && ok(CapabilityKey::Metrics),
            storage: self.storage.clone().filter(|_| ok(CapabilityKey::Storage)),
            secrets: if ok(CapabilityKey::Secrets) {
                self.secrets.clone()
            } else {
                Vec::new()
            },
            http: self.http.clone().filter(|_| ok(CapabilityKey::Http)),
            cache: self.cache && ok(CapabilityKey::Cache),
        }
    }
}

/// A section that requests every capability (for tests).
#[cfg(test)]
pub(crate) fn everything() -> Capabilities {
    Capabilities {
        log: true,
        metrics: true,
        storage: Some(StorageCapability {
            namespaces: vec!["notes".into()],
            max_bytes: None,
        }),
        secrets: vec!["TOKEN".into()],
        http: Some(HttpCapability {
            allow: vec!["https://example.com".into()],
        }),
        cache: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_enum_and_the_manifest() {
        for (i, spec) in CAPABILITIES.iter().enumerate() {
            assert_eq!(spec.key as usize, i, "{} is out of order", spec.name);
            assert_eq!(spec.key.spec(), spec);
            for interface in spec.interfaces {
                assert_eq!(CapabilityKey::for_interface(interface), Some(spec.key));
                assert!(
                    !interface.contains('@'),
                    "{interface}: no version in the table"
                );
            }
        }
        // The manifest section has exactly one field per capability, named as in the table.
        let json = serde_json::to_value(everything()).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut names = CAPABILITIES.map(|spec| spec.name).to_vec();
        names.sort_unstable();
        let mut fields = fields;
        fields.sort_unstable();
        assert_eq!(fields, names);
        let bits: u32 = CapabilityKey::ALL.iter().map(|k| k.bit()).sum();
        assert_eq!(bits.count_ones() as usize, CAPABILITIES.len());
    }

    #[test]
    fn every_sdk_feature_of_the_table_exists() {
        let sdk = include_str!("../../../../sdk/rust/Cargo.toml");
        let features = &sdk[sdk.find("[features]").unwrap()..];
        let features = &features[..features[1..].find("\n[").map_or(features.len(), |i| i + 1)];
        for spec in &CAPABILITIES {
            if let Some(feature) = spec.sdk_feature {
                assert!(
                    features.contains(&format!("\n{feature} = ")),
                    "sdk/rust/Cargo.toml has no feature `{feature}` for capability {}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn keys_roundtrip_through_strings() {
        for key in CapabilityKey::ALL {
            assert_eq!(key.as_str().parse::<CapabilityKey>().unwrap(), key);
            assert_eq!(key.to_string(), key.as_str());
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(json, format!("\"{key}\""));
        }
        let err = "sockets".parse::<CapabilityKey>().unwrap_err();
        assert!(err.to_string().contains("`sockets`"));
        assert!(
            err.to_string()
                .ends_with("log, metrics, storage, secrets, http, cache")
        );
    }

    #[test]
    fn keys_lists_what_is_requested() {
        assert_eq!(Capabilities::default().keys(), vec![CapabilityKey::Log]);
        assert!(Capabilities::none().keys().is_empty());
        assert_eq!(everything().keys(), CapabilityKey::ALL.to_vec());
        let empty_secrets = Capabilities {
            secrets: Vec::new(),
            ..everything()
        };
        assert!(!empty_secrets.keys().contains(&CapabilityKey::Secrets));
    }

    #[test]
    fn restrict_to_drops_unapproved() {
        let all = everything();
        assert_eq!(all.restrict_to(&CapabilityKey::ALL), all);
        assert_eq!(all.restrict_to(&[]), Capabilities::none());
        let some = all.restrict_to(&[CapabilityKey::Storage, CapabilityKey::Http]);
        assert!(!some.log && !some.metrics && some.secrets.is_empty());
        assert_eq!(some.storage, all.storage);
        assert_eq!(some.http, all.http);
        assert_eq!(
            some.keys(),
            vec![CapabilityKey::Storage, CapabilityKey::Http]
        );
    }
}
