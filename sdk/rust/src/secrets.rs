//! Secret values set by the tenant's operator (`palisade:extension/secrets`, feature
//! `secrets`, granted by the manifest capability `secrets` with the names it lists).
//!
//! ```no_run
//! use palisade_sdk::secrets::{self, SecretError};
//!
//! let token = match secrets::get("api-token") {
//!     Ok(token) => Some(token),
//!     Err(SecretError::NotFound) => None,
//!     Err(other) => panic!("{other}"),
//! };
//! ```

#[cfg(not(palisade_fake_host))]
use crate::bindings::secrets::palisade::extension::secrets as wit;
#[cfg(palisade_fake_host)]
use crate::testing::secrets as wit;

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The name is not listed in the manifest's `secrets` capability.
    #[error("the secret is not listed in the manifest's `secrets` capability")]
    NotGranted,
    /// The name is granted but no value is set for this install.
    #[error("the secret has no value for this install")]
    NotFound,
    /// The secret store failed; the operator's log has the detail.
    #[error("the secret store is unavailable")]
    Unavailable,
}

impl From<wit::Error> for SecretError {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::NotGranted => SecretError::NotGranted,
            wit::Error::NotFound => SecretError::NotFound,
            wit::Error::Unavailable => SecretError::Unavailable,
        }
    }
}

/// Returns the value of the secret `name`.
pub fn get(name: &str) -> Result<String, SecretError> {
    Ok(wit::get(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_convert_from_the_host() {
        assert_eq!(
            SecretError::from(wit::Error::NotGranted),
            SecretError::NotGranted
        );
        assert_eq!(
            SecretError::from(wit::Error::NotFound),
            SecretError::NotFound
        );
        assert_eq!(
            SecretError::from(wit::Error::Unavailable),
            SecretError::Unavailable
        );
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert!(
            SecretError::NotGranted
                .to_string()
                .contains("`secrets` capability")
        );
        assert!(SecretError::NotFound.to_string().contains("no value"));
    }
}
