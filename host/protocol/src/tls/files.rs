//! A configuration built from files and built again when their contents change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, Weak};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{RELOAD_INTERVAL, TlsError};

/// The contents of a set of files, in the order they were named.
pub(super) struct Contents(Vec<(PathBuf, Vec<u8>)>);

impl Contents {
    fn read(paths: &[PathBuf]) -> Result<Contents, TlsError> {
        paths
            .iter()
            .map(|path| {
                std::fs::read(path)
                    .map(|bytes| (path.clone(), bytes))
                    .map_err(|source| TlsError::Read {
                        path: path.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()
            .map(Contents)
    }

    /// The contents of `path` (one of the files read).
    pub(super) fn of(&self, path: &Path) -> &[u8] {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map_or(&[], |(_, bytes)| bytes.as_slice())
    }

    /// Every certificate in `path`, in order; at least one.
    pub(super) fn certificates(
        &self,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(self.of(path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Missing {
                path: path.to_owned(),
                what: "CERTIFICATE",
            });
        }
        Ok(certs)
    }

    /// The private key in `path` (PKCS#8, PKCS#1 or SEC1).
    pub(super) fn private_key(&self, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
        use tokio_rustls::rustls::pki_types::pem::Error;
        PrivateKeyDer::from_pem_slice(self.of(path)).map_err(|e| match e {
            Error::NoItemsFound => TlsError::Missing {
                path: path.to_owned(),
                what: "PRIVATE KEY",
            },
            e => TlsError::Pem {
                path: path.to_owned(),
                reason: e.to_string(),
            },
        })
    }
}

/// A value built from files, rebuilt when their contents change. Clones share it; the
/// watch stops with the last clone.
pub(super) struct Reloading<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Reloading {
            shared: Arc::clone(&self.shared),
        }
    }
}

type Build<T> = dyn Fn(&Contents) -> Result<T, TlsError> + Send + Sync;

struct Shared<T> {
    current: RwLock<Arc<T>>,
    paths: Vec<PathBuf>,
    build: Box<Build<T>>,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Builds the value from `paths` now (an error is returned as is), then, inside a Tokio
    /// runtime, checks the files every [`RELOAD_INTERVAL`] and builds it again when any
    /// changed. `what` names the value in log lines.
    pub(super) fn load(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn(&Contents) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let contents = Contents::read(&paths)?;
        let value = build(&contents)?;
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(value)),
            paths,
            build: Box::new(build),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(watch(what, Arc::downgrade(&shared), contents));
        }
        Ok(Reloading { shared })
    }

    /// The value as last built.
    pub(super) fn current(&self) -> Arc<T> {
        Arc::clone(
            &self
                .shared
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// Rebuilds the value whenever the files' contents differ from the last seen, until no
/// clone is left. A build that fails keeps the previous value, and is tried again when the
/// files change again.
async fn watch<T>(what: &'static str, shared: Weak<Shared<T>>, mut seen: Contents) {
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut unreadable = false;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let contents = match Contents::read(&shared.paths) {
            Ok(contents) => {
                unreadable = false;
                contents
            }
            Err(error) => {
                if !std::mem::replace(&mut unreadable, true) {
                    tracing::warn!(what, %error, "TLS files unreadable; the previous configuration stays");
                }
                continue;
            }
        };
        if contents.0 == seen.0 {
            continue;
        }
        match (shared.build)(&contents) {
            Ok(value) => {
                *shared
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
                tracing::info!(what, "TLS files changed: reloaded");
            }
            Err(error) => {
                tracing::warn!(what, %error, "TLS files changed but do not load; the previous configuration stays");
            }
        }
        seen = contents;
    }
}
