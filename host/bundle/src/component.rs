//! What a runner's engine accepts: the WebAssembly features it is built with and the
//! per-component caps of its instance pool, checked at publish with `wasmparser` (the
//! gateway and the admin API publish too and never link wasmtime).
//!
//! The runtime configures its engine from the same [`ENGINE_FEATURES`] and
//! [`ComponentLimits`], so a component that passes [`check_component`] loads on every
//! runner with those settings, and one that does not is refused at publish with the reason.

use serde::{Deserialize, Serialize};
use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind,
    ComponentTypeRef, Encoding, Instance, Parser, Payload, Validator, WasmFeatures,
};

/// The WebAssembly features of the runners' engine: the WebAssembly 3.0 set that wasmtime
/// enables by default and the component model, without threads (the pooling allocator
/// cannot hold shared memories, and an instance cannot start threads) and without the
/// component-model async ABI (the wasi:http 0.2 handler path needs none of it).
pub const ENGINE_FEATURES: WasmFeatures = WasmFeatures::WASM3
    .union(WasmFeatures::COMPONENT_MODEL)
    .union(WasmFeatures::GC_TYPES)
    .difference(WasmFeatures::THREADS);

/// Linear memories one core module may define. The instance pool gives each core instance
/// one memory slot; a module defining two (multi-memory) cannot be instantiated.
pub const MAX_MEMORIES_PER_MODULE: u32 = 1;

/// Tables one core module may define (the instance pool's per-instance table slots).
pub const MAX_TABLES_PER_MODULE: u32 = 1;

/// Elements of one pooled table slot: a table declaring a larger minimum cannot be
/// allocated. The per-call limiter allows growth only up to this too.
pub const MAX_TABLE_ELEMENTS: u64 = 100_000;

/// The per-component caps of the instance pool. A component is instantiated once per call;
/// these bound what one call can take from the pool that every tenant on the runner
/// shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentLimits {
    /// Core module instances one component may create.
    pub max_core_instances: u32,
    /// Linear memories one component may define, across all its core instances.
    pub max_memories: u32,
    /// Tables one component may define, across all its core instances.
    pub max_tables: u32,
    /// Largest initial size of one linear memory, in bytes (the runner's memory cap).
    pub max_memory_bytes: u64,
}

impl ComponentLimits {
    /// The defaults (also the runtime's): see `docs/operations.md` for what the sample
    /// guests use.
    pub const DEFAULT: ComponentLimits = ComponentLimits {
        max_core_instances: 15,
        max_memories: 4,
        max_tables: 15,
        max_memory_bytes: 256 * 1024 * 1024,
    };
}

impl Default for ComponentLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What instantiating a component takes from the instance pool, counted the way the
/// pooling allocator counts it: every instantiation of a core module, and the memories and
/// tables that module defines (imported ones are shared, not new).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComponentUsage {
    /// Core module instances.
    pub core_instances: u64,
    /// Linear memories defined.
    pub memories: u64,
    /// Tables defined.
    pub tables: u64,
}

impl ComponentUsage {
    fn add(&mut self, other: ComponentUsage) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances);
        self.memories = self.memories.saturating_add(other.memories);
        self.tables = self.tables.saturating_add(other.tables);
    }
}

/// Why a component is refused: the runners' engine would not load it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    /// The component does not validate with the runners' WebAssembly features.
    #[error("the component is not valid for the runners' engine: {0}")]
    Invalid(String),
    /// Over one of the per-component caps.
    #[error(
        "the component creates {count} {what} per instance; runners allow at most {max} (operator setting `runtime.{setting}`)"
    )]
    OverCap {
        /// What is counted, e.g. `core instances`.
        what: &'static str,
        /// How many the component creates.
        count: u64,
        /// The cap.
        max: u32,
        /// The operator setting that sets the cap.
        setting: &'static str,
    },
    /// A core module defines more memories or tables than one pooled instance holds.
    #[error(
        "a core module of the component defines {count} {what}; runners allow {max} per core module{hint}"
    )]
    PerModule {
        /// `memories` or `tables`.
        what: &'static str,
        /// How many the module defines.
        count: u64,
        /// The fixed per-module cap.
        max: u32,
        /// Why, when it helps.
        hint: &'static str,
    },
    /// A memory or table whose initial size does not fit a pool slot.
    #[error("a core module of the component declares {what}")]
    TooLarge {
        /// What is too large, with the figures.
        what: String,
    },
    /// A shared memory (threads): the instance pool cannot hold one.
    #[error("a core module of the component declares a shared memory; runners do not run threads")]
    SharedMemory,
    /// The component instantiates something whose contents cannot be known before it runs.
    #[error(
        "the component instantiates a component it imports or takes from an instance export; runners link neither"
    )]
    Unknowable,
}

/// A core module or component in an index space: what instantiating it costs, if known.
#[derive(Debug, Clone, Copy)]
enum Entry {
    Known(ComponentUsage),
    /// Imported or aliased from an instance export.
    Unknown,
}

#[derive(Default)]
struct ComponentScope {
    modules: Vec<Entry>,
    components: Vec<Entry>,
    usage: ComponentUsage,
}

#[derive(Default)]
struct ModuleScope {
    memories: u64,
    tables: u64,
}

enum Scope {
    Component(ComponentScope),
    Module(ModuleScope),
}

/// Checks `wasm` against the runners' engine: it must validate with [`ENGINE_FEATURES`],
/// each core module must fit a pooled instance, and one instantiation of the component must
/// stay within `limits`. Returns what one instantiation takes from the pool.
pub fn check_component(
    wasm: &[u8],
    limits: &ComponentLimits,
) -> Result<ComponentUsage, ComponentError> {
    Validator::new_with_features(ENGINE_FEATURES)
        .validate_all(wasm)
        .map_err(|e| ComponentError::Invalid(e.to_string()))?;
    let usage = usage(wasm, limits)?;
    let caps = [
        (
            "core instances",
            usage.core_instances,
            limits.max_core_instances,
            "max_core_instances_per_component",
        ),
        (
            "memories",
            usage.memories,
            limits.max_memories,
            "max_memories_per_component",
        ),
        (
            "tables",
            usage.tables,
            limits.max_tables,
            "max_tables_per_component",
        ),
    ];
    for (what, count, max, setting) in caps {
        if count > u64::from(max) {
            return Err(ComponentError::OverCap {
                what,
                count,
                max,
                setting,
            });
        }
    }
    Ok(usage)
}

fn invalid(e: wasmparser::BinaryReaderError) -> ComponentError {
    ComponentError::Invalid(e.to_string())
}

/// Counts what one instantiation of the (already validated) component takes from the pool.
fn usage(wasm: &[u8], limits: &ComponentLimits) -> Result<ComponentUsage, ComponentError> {
    let mut stack: Vec<Scope> = Vec::new();
    let mut top = None;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        match payload {
            Payload::Version { encoding, .. } => stack.push(match encoding {
                Encoding::Module => Scope::Module(ModuleScope::default()),
                Encoding::Component => Scope::Component(ComponentScope::default()),
            }),
            Payload::End(_) => match stack.pop() {
                Some(Scope::Module(module)) => {
                    let usage = ComponentUsage {
                        core_instances: 1,
                        memories: module.memories,
                        tables: module.tables,
                    };
                    match stack.last_mut() {
                        Some(Scope::Component(parent)) => parent.modules.push(Entry::Known(usage)),
                        // A bare core module is refused by the import check; count it as one
                        // instantiation.
                        _ => top = Some(usage),
                    }
                }
                Some(Scope::Component(component)) => match stack.last_mut() {
                    Some(Scope::Component(parent)) => {
                        parent.components.push(Entry::Known(component.usage));
                    }
                    _ => top = Some(component.usage),
                },
                None => {}
            },
            Payload::MemorySection(reader) => {
                if let Some(Scope::Module(module)) = stack.last_mut() {
                    for memory in reader {
                        let memory = memory.map_err(invalid)?;
                        module.memories += 1;
                        check_memory(&memory, limits)?;
                    }
                    if module.memories > u64::from(MAX_MEMORIES_PER_MODULE) {
                        return Err(ComponentError::PerModule {
                            what: "memories",
                            count: module.memories,
                            max: MAX_MEMORIES_PER_MODULE,
                            hint: " (multi-memory is not supported)",
                        });
                    }
                }
            }
            Payload::TableSection(reader) => {
                if let Some(Scope::Module(module)) = stack.last_mut() {
                    for table in reader {
                        let table = table.map_err(invalid)?;
                        module.tables += 1;
                        if table.ty.initial > MAX_TABLE_ELEMENTS {
                            return Err(ComponentError::TooLarge {
                                what: format!(
                                    "a table of {} elements; runners allow {MAX_TABLE_ELEMENTS}",
                                    table.ty.initial
                                ),
                            });
                        }
                    }
                    if module.tables > u64::from(MAX_TABLES_PER_MODULE) {
                        return Err(ComponentError::PerModule {
                            what: "tables",
                            count: module.tables,
                            max: MAX_TABLES_PER_MODULE,
                            hint: "",
                        });
                    }
                }
            }
            other => {
                let outer = if matches!(other, Payload::ComponentAliasSection(_)) {
                    stack_outer(&stack)
                } else {
                    Vec::new()
                };
                if let Some(Scope::Component(scope)) = stack.last_mut() {
                    component_payload(other, scope, &outer)?;
                }
            }
        }
    }
    Ok(top.unwrap_or_default())
}

/// The module and component entries of one enclosing component.
type OuterEntries = (Vec<Entry>, Vec<Entry>);

/// The entries of the enclosing components, innermost first, for `alias outer`.
fn stack_outer(stack: &[Scope]) -> Vec<OuterEntries> {
    stack
        .iter()
        .rev()
        .skip(1)
        .filter_map(|scope| match scope {
            Scope::Component(c) => Some((c.modules.clone(), c.components.clone())),
            Scope::Module(_) => None,
        })
        .collect()
}

fn check_memory(
    memory: &wasmparser::MemoryType,
    limits: &ComponentLimits,
) -> Result<(), ComponentError> {
    if memory.shared {
        return Err(ComponentError::SharedMemory);
    }
    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
    let bytes = memory.initial.saturating_mul(page);
    if bytes > limits.max_memory_bytes {
        return Err(ComponentError::TooLarge {
            what: format!(
                "a memory of {bytes} bytes initially; runners allow {} bytes (operator setting `runtime.max_memory_mb`)",
                limits.max_memory_bytes
            ),
        });
    }
    Ok(())
}

/// Index-space bookkeeping and instantiations in one component.
fn component_payload(
    payload: Payload<'_>,
    scope: &mut ComponentScope,
    outer: &[OuterEntries],
) -> Result<(), ComponentError> {
    match payload {
        Payload::ComponentImportSection(reader) => {
            for import in reader {
                match import.map_err(invalid)?.ty {
                    ComponentTypeRef::Module(_) => scope.modules.push(Entry::Unknown),
                    ComponentTypeRef::Component(_) => scope.components.push(Entry::Unknown),
                    _ => {}
                }
            }
        }
        Payload::ComponentExportSection(reader) => {
            // Exporting a module or component adds an index for it.
            for export in reader {
                let export = export.map_err(invalid)?;
                let index = export.index as usize;
                match export.kind {
                    ComponentExternalKind::Module => {
                        let entry = scope.modules.get(index).copied().unwrap_or(Entry::Unknown);
                        scope.modules.push(entry);
                    }
                    ComponentExternalKind::Component => {
                        let entry = scope
                            .components
                            .get(index)
                            .copied()
                            .unwrap_or(Entry::Unknown);
                        scope.components.push(entry);
                    }
                    _ => {}
                }
            }
        }
        Payload::ComponentAliasSection(reader) => {
            for alias in reader {
                match alias.map_err(invalid)? {
                    ComponentAlias::InstanceExport { kind, .. } => match kind {
                        ComponentExternalKind::Module => scope.modules.push(Entry::Unknown),
                        ComponentExternalKind::Component => scope.components.push(Entry::Unknown),
                        _ => {}
                    },
                    ComponentAlias::Outer { kind, count, index } => {
                        // `count` 0 is this component; the validator checked the bounds.
                        let level = (count as usize).checked_sub(1);
                        let entry = |pick: fn(&OuterEntries) -> &Vec<Entry>, own: &Vec<Entry>| {
                            let list = match level {
                                None => Some(own),
                                Some(level) => outer.get(level).map(pick),
                            };
                            list.and_then(|l| l.get(index as usize).copied())
                                .unwrap_or(Entry::Unknown)
                        };
                        match kind {
                            ComponentOuterAliasKind::CoreModule => {
                                let e = entry(|o| &o.0, &scope.modules);
                                scope.modules.push(e);
                            }
                            ComponentOuterAliasKind::Component => {
                                let e = entry(|o| &o.1, &scope.components);
                                scope.components.push(e);
                            }
                            _ => {}
                        }
                    }
                    ComponentAlias::CoreInstanceExport { .. } => {}
                }
            }
        }
        Payload::InstanceSection(reader) => {
            for instance in reader {
                if let Instance::Instantiate { module_index, .. } = instance.map_err(invalid)? {
                    match scope.modules.get(module_index as usize) {
                        Some(Entry::Known(usage)) => scope.usage.add(*usage),
                        // A module whose contents are not known here (imported, or taken
                        // from an instance export): counted at the most one core module
                        // may define.
                        _ => scope.usage.add(ComponentUsage {
                            core_instances: 1,
                            memories: u64::from(MAX_MEMORIES_PER_MODULE),
                            tables: u64::from(MAX_TABLES_PER_MODULE),
                        }),
                    }
                }
            }
        }
        Payload::ComponentInstanceSection(reader) => {
            for instance in reader {
                if let ComponentInstance::Instantiate {
                    component_index, ..
                } = instance.map_err(invalid)?
                {
                    match scope.components.get(component_index as usize) {
                        Some(Entry::Known(usage)) => scope.usage.add(*usage),
                        _ => return Err(ComponentError::Unknowable),
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
