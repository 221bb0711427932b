//! Admission control: caps on in-flight calls per install and per tenant, so one tenant
//! cannot take every instance slot of a runner. A refused call gets 429 with `retry-after`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Install(String),
    Tenant(String),
}

/// Counts of in-flight calls.
#[derive(Debug)]
pub(crate) struct Admission {
    per_install: usize,
    per_tenant: usize,
    in_flight: Mutex<HashMap<Scope, usize>>,
}

/// Which cap refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Install,
    Tenant,
}

/// Holds one call's place; releases it when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    scopes: [Scope; 2],
    /// The call in the runner's in-flight gauge, when counted there.
    in_flight: Option<crate::platform_metrics::InFlight>,
}

impl Permit {
    /// This permit, holding the call's place in the in-flight gauge too.
    pub(crate) fn counted(mut self, in_flight: crate::platform_metrics::InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }
}

impl Admission {
    pub(crate) fn new(per_install: usize, per_tenant: usize) -> Arc<Self> {
        Arc::new(Admission {
            per_install: per_install.max(1),
            per_tenant: per_tenant.max(1),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a call for `install_id` of `tenant_id`, or says which cap is full.
    pub(crate) fn try_admit(
        self: &Arc<Self>,
        tenant_id: &str,
        install_id: &str,
    ) -> Result<Permit, Refused> {
        let install = Scope::Install(install_id.to_owned());
        let tenant = Scope::Tenant(tenant_id.to_owned());
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if in_flight.get(&install).copied().unwrap_or(0) >= self.per_install {
            return Err(Refused::Install);
        }
        if in_flight.get(&tenant).copied().unwrap_or(0) >= self.per_tenant {
            return Err(Refused::Tenant);
        }
        *in_flight.entry(install.clone()).or_insert(0) += 1;
        *in_flight.entry(tenant.clone()).or_insert(0) += 1;
        Ok(Permit {
            admission: self.clone(),
            scopes: [install, tenant],
            in_flight: None,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_flight = self
            .admission
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for scope in &self.scopes {
            if let Some(count) = in_flight.get_mut(scope) {
                *count -= 1;
                if *count == 0 {
                    in_flight.remove(scope);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_apply_per_install_and_per_tenant_and_release_on_drop() {
        let admission = Admission::new(1, 2);
        let a = admission.try_admit("t1", "i1").unwrap();
        assert_eq!(
            admission.try_admit("t1", "i1").unwrap_err(),
            Refused::Install
        );
        let b = admission.try_admit("t1", "i2").unwrap();
        assert_eq!(
            admission.try_admit("t1", "i3").unwrap_err(),
            Refused::Tenant
        );
        // Another tenant is unaffected.
        let _c = admission.try_admit("t2", "i4").unwrap();
        drop(a);
        let _d = admission.try_admit("t1", "i1").unwrap();
        drop(b);
        drop(_d);
        drop(_c);
        assert!(admission.in_flight.lock().unwrap().is_empty());
    }
}
