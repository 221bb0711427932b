//! Run handlers natively in `cargo test`, against in-memory fakes of the host (feature
//! `testing`; it changes nothing in `wasm32` builds).
//!
//! A [`TestHost`] stands in for the runner: [`TestHost::call`] runs a handler on the test's
//! thread, and every host function the handler calls — [`context`](crate::context),
//! [`log`](crate::log), `storage`, `secrets`, `fetch`, `metrics`, `cache`,
//! [`time::sleep`](crate::time::sleep) — reaches the host's fake instead of a component
//! import. The fakes keep the host's documented rules, so a handler meets in a test the
//! answers it meets in production:
//!
//! * **Grants.** [`TestHost::from_manifest`] grants what the manifest requests, as a
//!   tenant approving it at install would. A namespace outside `capabilities.storage` is
//!   `access-denied`, a secret name outside `capabilities.secrets` is `not-granted`, a URL
//!   whose origin `capabilities.http.allow` does not list is denied. Calling an interface
//!   the manifest does not request at all panics, naming the manifest key: publishing
//!   would refuse such a component.
//! * **Storage**: revisions from one counter per install, the conditions of `set` and
//!   `delete`, paging with opaque cursors, and the operator's default limits and per-call
//!   budgets (key 512 bytes, value 1 MiB, 1000 operations and 32 MiB per call, 100 000
//!   keys per namespace, 64 MiB per install or the manifest's `max_bytes`).
//! * **Secrets**: values set with [`TestHost::with_secret`]; a granted name without one is
//!   `not-found`.
//! * **Egress**: the URL and header checks, the allow-list (scheme, host — `*.` for
//!   subdomains — and port, the scheme's default when none is given), 32 requests per
//!   call, and addresses the platform forbids (an IP literal in a loopback, private,
//!   link-local... range). Nothing goes to the network: an allowed request is answered by
//!   the answer scripted for its method and URL with [`TestHost::with_answer`], and
//!   without one it fails naming the request.
//! * **Metrics**: the name and label rules, kinds, and the bound of 1000 series.
//! * **Cache**: key and value bounds, times to live on a clock that
//!   [`TestHost::advance`] and `time::sleep` move forward (a test never waits).
//! * **Log** lines are kept for [`TestHost::logs`]; **context** comes from the manifest
//!   and the `with_*` settings.
//!
//! Not modelled: the write rate of an install over time (it needs more than the 1000
//! writes one call may make), the operator's own egress policy (`deny_hosts`,
//! `allow_cidrs`), DNS (host names are never resolved), and fuel, memory and time limits.
//!
//! ```
//! use palisade_sdk::http::{Method, Request, Response, Router};
//! use palisade_sdk::testing::TestHost;
//! use palisade_sdk::{context, log};
//!
//! fn handle(request: Request) -> Response {
//!     Router::new()
//!         .get("/hello/:name", |request: Request| {
//!             let name = request.param("name").unwrap_or("world");
//!             log::write(log::Level::Info, "greeting", &[("name", name)]);
//!             Response::json(200, &serde_json::json!({ "tenant": context::get().tenant_id }))
//!         })
//!         .handle(request)
//! }
//!
//! let host = TestHost::from_manifest(r#"{ "id": "com.example.hello", "version": "0.1.0" }"#)
//!     .unwrap()
//!     .with_tenant("acme");
//! let response = host.call(handle, Request::new(Method::Get, "/hello/ada"));
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.body(), br#"{"tenant":"acme"}"#);
//! assert_eq!(host.logs()[0].message, "greeting");
//! assert_eq!(host.logs()[0].fields, [("name".to_owned(), "ada".to_owned())]);
//! ```

#[cfg(feature = "cache")]
pub(crate) mod cache;
pub(crate) mod context;
#[cfg(feature = "http-client")]
pub(crate) mod egress;
pub(crate) mod log;
mod manifest;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
#[cfg(feature = "secrets")]
pub(crate) mod secrets;
#[cfg(feature = "storage")]
pub(crate) mod storage;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use crate::context::Invocation;
use crate::http::{BodyReader, Request, Response};

#[cfg(feature = "http-client")]
pub use egress::SentRequest;
pub use log::LogLine;
pub use manifest::{ManifestError, Origin};

/// A fake host for running handlers natively; see the [module documentation](self).
///
/// Storage, metrics, cache entries, log lines and sent requests last as long as the
/// `TestHost`, across calls, like an install's data across calls on one runner; the
/// budgets of a call start again at every [`call`](Self::call).
pub struct TestHost {
    state: Rc<RefCell<State>>,
}

/// What the tenant approved: the manifest's requests.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grants {
    pub(crate) log: bool,
    /// `capabilities.storage`: namespaces and the manifest's `max_bytes`.
    pub(crate) storage: Option<(BTreeSet<String>, Option<u64>)>,
    /// `capabilities.secrets` (granted when not empty).
    pub(crate) secrets: BTreeSet<String>,
    /// `capabilities.http.allow`.
    pub(crate) http: Option<Vec<Origin>>,
    pub(crate) metrics: bool,
    pub(crate) cache: bool,
}

/// Everything the fakes keep.
pub(crate) struct State {
    pub(crate) grants: Grants,
    pub(crate) invocation: Invocation,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) calls: u64,
    /// The calling user of HTTP calls ([`TestHost::with_user`]).
    pub(crate) user: Option<String>,
    /// Deliveries so far, by event id.
    pub(crate) attempts: BTreeMap<String, u32>,
    /// How far [`TestHost::advance`] and `time::sleep` moved the clock.
    pub(crate) clock: Duration,
    pub(crate) logs: Vec<LogLine>,
    #[cfg(feature = "storage")]
    pub(crate) storage: storage::Store,
    #[cfg(feature = "secrets")]
    pub(crate) secrets: BTreeMap<String, String>,
    #[cfg(feature = "http-client")]
    pub(crate) egress: egress::Egress,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: metrics::Store,
    #[cfg(feature = "cache")]
    pub(crate) cache: cache::Store,
}

thread_local! {
    /// The host of the call running on this thread.
    static CURRENT: RefCell<Option<Rc<RefCell<State>>>> = const { RefCell::new(None) };
}

/// Runs `f` on the state of the host whose call is running on this thread.
///
/// Panics when no call runs: a host function called outside [`TestHost::call`] has no
/// host to answer it.
pub(crate) fn with_state<R>(function: &str, f: impl FnOnce(&mut State) -> R) -> R {
    let state = CURRENT.with(|current| current.borrow().clone());
    let Some(state) = state else {
        panic!(
            "`{function}` was called outside `TestHost::call`: with the `testing` feature, host \
             functions are answered by the `TestHost` whose call is running"
        );
    };
    let mut state = state.borrow_mut();
    f(&mut state)
}

/// Runs `f` on the current host's state if a call is running.
pub(crate) fn try_with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    let state = CURRENT.with(|current| current.borrow().clone())?;
    let mut state = state.borrow_mut();
    Some(f(&mut state))
}

/// Panics for an interface the manifest does not request: the platform would refuse to
/// publish the component.
pub(crate) fn not_granted(interface: &str, key: &str) -> ! {
    panic!(
        "the handler called `{interface}`, but the manifest does not request `capabilities.{key}`: \
         publishing refuses a component that imports it without the grant"
    )
}

/// Makes a host current on this thread until dropped (also when the handler panics).
struct Entered {
    previous: Option<Rc<RefCell<State>>>,
}

impl Entered {
    fn enter(state: Rc<RefCell<State>>) -> Entered {
        let previous = CURRENT.with(|current| current.borrow_mut().replace(state));
        Entered { previous }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// A host granting only what every extension has: `context`, `log` and the clock.
    /// Add grants with the `grant_*` methods, or start from the manifest with
    /// [`from_manifest`](Self::from_manifest).
    pub fn new() -> TestHost {
        TestHost::with_grants(
            Grants {
                log: true,
                ..Grants::default()
            },
            "com.example.test",
            "0.1.0",
        )
    }

    /// A host granting what `manifest` (the text of `manifest.json`) requests, with the
    /// manifest's `id` and `version` in the context. Typically
    /// `TestHost::from_manifest(include_str!("../manifest.json"))`.
    ///
    /// Fails, naming the key, on a manifest that is not JSON or whose `capabilities` have
    /// the wrong form; the rest of the manifest is not checked (`palisade build` checks it
    /// against the schema).
    pub fn from_manifest(manifest: &str) -> Result<TestHost, ManifestError> {
        let parsed = manifest::parse(manifest)?;
        Ok(TestHost::with_grants(
            parsed.grants,
            &parsed.id,
            &parsed.version,
        ))
    }

    fn with_grants(grants: Grants, extension_id: &str, version: &str) -> TestHost {
        let invocation = Invocation {
            request_id: String::new(),
            tenant_id: "test-tenant".to_owned(),
            extension_id: extension_id.to_owned(),
            install_id: "test-install".to_owned(),
            version_id: "test-version".to_owned(),
            version: version.to_owned(),
            content_hash: format!("sha256:{}", "0".repeat(64)),
            trigger: "http".to_owned(),
            user: None,
        };
        TestHost {
            state: Rc::new(RefCell::new(State {
                grants,
                invocation,
                config: BTreeMap::new(),
                calls: 0,
                user: None,
                attempts: BTreeMap::new(),
                clock: Duration::ZERO,
                logs: Vec::new(),
                #[cfg(feature = "storage")]
                storage: storage::Store::default(),
                #[cfg(feature = "secrets")]
                secrets: BTreeMap::new(),
                #[cfg(feature = "http-client")]
                egress: egress::Egress::default(),
                #[cfg(feature = "metrics")]
                metrics: metrics::Store::default(),
                #[cfg(feature = "cache")]
                cache: cache::Store::default(),
            })),
        }
    }

    fn update(self, f: impl FnOnce(&mut State)) -> TestHost {
        f(&mut self.state.borrow_mut());
        self
    }

    /// Grants the storage `namespaces` (`capabilities.storage.namespaces`).
    pub fn grant_storage<I, S>(self, namespaces: I) -> TestHost
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let namespaces = namespaces.into_iter().map(Into::into).collect();
        self.update(|state| state.grants.storage = Some((namespaces, None)))
    }

    /// Grants the secret `names` (`capabilities.secrets`).
    pub fn grant_secrets<I, S>(self, names: I) -> TestHost
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into);
        self.update(|state| state.grants.secrets.extend(names))
    }

    /// Adds `origin` (`https://api.example.com`, `https://*.example.com:8443`) to the
    /// egress allow-list (`capabilities.http.allow`).
    ///
    /// # Panics
    /// When `origin` is not an origin the manifest schema accepts; the message says why.
    pub fn allow_origin(self, origin: &str) -> TestHost {
        let parsed = match Origin::parse(origin) {
            Ok(parsed) => parsed,
            Err(why) => panic!("allow_origin({origin:?}): {why}"),
        };
        self.update(|state| state.grants.http.get_or_insert_with(Vec::new).push(parsed))
    }

    /// Grants `metrics`.
    pub fn grant_metrics(self) -> TestHost {
        self.update(|state| state.grants.metrics = true)
    }

    /// Grants `cache`.
    pub fn grant_cache(self) -> TestHost {
        self.update(|state| state.grants.cache = true)
    }

    /// Sets the tenant of every call (default `test-tenant`).
    pub fn with_tenant(self, tenant: &str) -> TestHost {
        let tenant = tenant.to_owned();
        self.update(|state| state.invocation.tenant_id = tenant)
    }

    /// Sets the calling user (the `sub` of the caller's token; default none).
    pub fn with_user(self, user: &str) -> TestHost {
        let user = user.to_owned();
        self.update(|state| state.user = Some(user))
    }

    /// Sets one value of the install's configuration ([`context::config`](crate::context::config)).
    pub fn with_config(self, key: &str, value: &str) -> TestHost {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.update(|state| {
            state.config.insert(key, value);
        })
    }

    /// Sets the value of the secret `name`, as an operator does with `palisade secrets
    /// set`. Whether the handler may read it still depends on the grant.
    #[cfg(feature = "secrets")]
    pub fn with_secret(self, name: &str, value: &str) -> TestHost {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.update(|state| {
            state.secrets.insert(name, value);
        })
    }

    /// Scripts the answer to `method url` (the URL exactly as the handler sends it): every
    /// allowed request for it gets a copy of `response`.
    #[cfg(feature = "http-client")]
    pub fn with_answer(
        self,
        method: crate::http::Method,
        url: &str,
        response: Response,
    ) -> TestHost {
        let url = url.to_owned();
        self.update(|state| state.egress.script(method, url, response))
    }

    /// Runs `handler` on `request` as one call of the install, and returns its response
    /// with the body collected (a streaming body is run to its end).
    pub fn call(&self, handler: impl FnOnce(Request) -> Response, request: Request) -> Response {
        self.run("http", || handler(request))
    }

    /// Delivers the event `event_id` on `topic` with `payload` as its JSON body to
    /// `handler`, as `POST path` with the platform's `x-palisade-*` headers (read them with
    /// [`Delivery::of`](crate::events::Delivery::of)); the context's trigger is `event`
    /// and there is no user. Delivering the same `event_id` again counts the attempts, as
    /// a redelivery does.
    ///
    /// # Panics
    /// When `payload` cannot be serialized as JSON.
    pub fn deliver<T: serde::Serialize + ?Sized>(
        &self,
        handler: impl FnOnce(Request) -> Response,
        path: &str,
        topic: &str,
        event_id: &str,
        payload: &T,
    ) -> Response {
        let body = serde_json::to_vec(payload)
            .unwrap_or_else(|error| panic!("the payload of event `{event_id}`: {error}"));
        let attempt = {
            let mut state = self.state.borrow_mut();
            let attempts = state.attempts.entry(event_id.to_owned()).or_insert(0);
            *attempts += 1;
            *attempts
        };
        let request = Request::new(crate::http::Method::Post, path)
            .with_header("content-type", "application/json")
            .with_header("x-palisade-trigger", "event")
            .with_header("x-palisade-event-topic", topic)
            .with_header("x-palisade-event-id", event_id)
            .with_header("x-palisade-event-key", event_id)
            .with_header("x-palisade-event-attempt", attempt.to_string())
            .with_header("x-palisade-event-published-at", "2026-01-01T00:00:00.000Z")
            .with_body(body);
        self.run("event", || handler(request))
    }

    /// Runs a streaming handler (as given to
    /// [`export_streaming_handler!`](crate::export_streaming_handler)) on `request`, its
    /// body handed over as a [`BodyReader`].
    pub fn call_streaming(
        &self,
        handler: impl FnOnce(Request, BodyReader) -> Response,
        mut request: Request,
    ) -> Response {
        let body = BodyReader::from_bytes(request.take_body());
        self.run("http", || handler(request, body))
    }

    fn run(&self, trigger: &str, handler: impl FnOnce() -> Response) -> Response {
        {
            let mut state = self.state.borrow_mut();
            state.calls += 1;
            state.invocation.request_id = format!("test-request-{}", state.calls);
            state.invocation.trigger = trigger.to_owned();
            state.invocation.user = if trigger == "http" {
                state.user.clone()
            } else {
                None
            };
            state.begin_call();
        }
        let _entered = Entered::enter(Rc::clone(&self.state));
        let (status, headers, body) = handler().into_parts();
        headers
            .into_iter()
            .fold(Response::new(status), |response, (name, value)| {
                response.append_header(&name, value)
            })
            .with_body(body)
    }

    /// The identifiers of the last call (or of the next one, before any call).
    pub fn invocation(&self) -> Invocation {
        self.state.borrow().invocation.clone()
    }

    /// Every line the handler logged, over all calls.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.borrow().logs.clone()
    }

    /// Moves the host's clock forward (cache entries expire; nothing waits).
    pub fn advance(&self, by: Duration) {
        let mut state = self.state.borrow_mut();
        state.clock = state.clock.saturating_add(by);
    }

    /// The stored entry of `namespace`/`key`, read past every grant and budget.
    #[cfg(feature = "storage")]
    pub fn stored(&self, namespace: &str, key: &str) -> Option<crate::storage::Entry> {
        self.state.borrow().storage.entry(namespace, key)
    }

    /// Every request the handler sent that passed the checks, in order.
    #[cfg(feature = "http-client")]
    pub fn sent_requests(&self) -> Vec<SentRequest> {
        self.state.borrow().egress.sent.clone()
    }

    /// The value of the counter `name` (with or without its `_total` suffix) for
    /// `labels` (in any order), if it was recorded.
    #[cfg(feature = "metrics")]
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.state.borrow().metrics.counter(name, labels)
    }

    /// The value of the gauge `name` for `labels`, if it was set.
    #[cfg(feature = "metrics")]
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.state.borrow().metrics.gauge(name, labels)
    }

    /// The observations of the histogram `name` for `labels`, in order.
    #[cfg(feature = "metrics")]
    pub fn observations(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.state.borrow().metrics.observations(name, labels)
    }
}

impl State {
    /// Starts the budgets of a new call.
    fn begin_call(&mut self) {
        #[cfg(feature = "storage")]
        self.storage.begin_call();
        #[cfg(feature = "http-client")]
        self.egress.begin_call();
    }
}

#[cfg(test)]
mod tests;
