//! Errors of loading and executing components. Guest-visible errors are WIT variants and
//! never reach here; these are what the runner maps to transport statuses (and logs in
//! full for the operator).

/// Why a component could not be compiled or prepared.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component for this engine.
    #[error("component does not compile: {0:#}")]
    Compile(#[source] wasmtime::Error),
    /// Building the linker failed (a host bug).
    #[error("linking host interfaces failed: {0:#}")]
    Link(#[source] wasmtime::Error),
    /// The component imports something the grant set does not link.
    #[error("component cannot be instantiated with its grants: {0:#}")]
    Imports(#[source] wasmtime::Error),
    /// The component does not export `wasi:http/incoming-handler`.
    #[error("component does not export wasi:http/incoming-handler@0.2: {0:#}")]
    NotAHandler(#[source] wasmtime::Error),
    /// The compilation task was cancelled (the runtime is shutting down) or panicked.
    #[error("compilation task failed: {0}")]
    Join(String),
    /// The runtime's own threads (the epoch ticker, the guest executor) could not be
    /// started.
    #[error("runtime threads could not be started: {0}")]
    Threads(#[source] std::io::Error),
    /// Compiling took longer than the operator's `compile_timeout_ms`; the component is
    /// refused without compiling again for a while.
    #[error(
        "compiling the component took longer than {timeout_ms} ms; refused until {retry_in_s} s from now"
    )]
    CompileTimeout {
        /// The limit.
        timeout_ms: u64,
        /// Seconds until this runner tries to compile it again.
        retry_in_s: u64,
    },
}

/// Why a call produced no guest response.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The deadline passed (epoch interruption or a host call that did not return in time).
    #[error("deadline of {0} ms exceeded")]
    Timeout(u64),
    /// The instance hit its memory limit.
    #[error("memory limit exceeded: {0:#}")]
    OutOfMemory(#[source] wasmtime::Error),
    /// The guest trapped; `code` is stable (`unreachable`, `stack_overflow`, `exit`, ...).
    #[error("guest trapped ({code}): {source:#}")]
    Trap {
        /// Stable trap code.
        code: &'static str,
        /// The trap with its wasm backtrace, for the operator.
        #[source]
        source: wasmtime::Error,
    },
    /// The guest returned without setting a response, or set an error instead.
    #[error("guest produced no response: {0}")]
    NoResponse(String),
    /// The guest's response body ended without being finished (the guest dropped it, or
    /// wrote less or more than the `content-length` it declared).
    #[error("response body incomplete: {0}")]
    BodyIncomplete(String),
    /// The guest's response body exceeded the limit.
    #[error("response body exceeds {0} bytes")]
    ResponseTooLarge(usize),
    /// Every instance slot of the pool is in use; the call was not started.
    #[error("instance pool exhausted: {0}")]
    PoolExhausted(#[source] wasmtime::Error),
    /// The instance could not be created.
    #[error("instantiation failed: {0:#}")]
    Instantiate(#[source] wasmtime::Error),
}
