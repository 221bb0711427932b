//! The shared store of precompiled artifacts: the registry's object store.

use std::sync::Arc;

use futures::future::BoxFuture;
use object_store::{ObjectStore, PutPayload, path::Path};
use palisade_registry::Registry;
use palisade_runtime::ArtifactStore;

/// Artifacts kept next to the bundles in the registry's object store.
struct ObjectStoreArtifacts {
    store: Arc<dyn ObjectStore>,
}

/// The artifact store of `registry`.
pub fn artifact_store(registry: &Registry) -> Arc<dyn ArtifactStore> {
    Arc::new(ObjectStoreArtifacts {
        store: registry.objects().inner().clone(),
    })
}

impl ArtifactStore for ObjectStoreArtifacts {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let result = async { self.store.get(&Path::from(key)).await?.bytes().await }.await;
            match result {
                Ok(bytes) => Some(bytes.to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "reading a precompiled artifact failed");
                    None
                }
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, sealed: Vec<u8>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self
                .store
                .put(&Path::from(key), PutPayload::from(sealed))
                .await
            {
                tracing::warn!(%key, error = %e, "storing a precompiled artifact failed");
            }
        })
    }
}
