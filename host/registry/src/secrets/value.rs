//! [`SecretValue`]: a plaintext secret that never prints itself.

use zeroize::Zeroizing;

/// The plaintext of one secret. Its `Debug` output is redacted, it has no `Display`, and
/// its memory is overwritten when it is dropped.
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wraps a plaintext value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(Zeroizing::new(value.into()))
    }

    /// The plaintext. Hand it on only to where it is used (the guest, the sealer).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length of the plaintext in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        SecretValue::new(value)
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let value = SecretValue::new("hunter2-very-secret");
        let printed = format!("{value:?} {value:#?} {:?}", Some(&value));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn the_plaintext_is_available_on_purpose() {
        let value = SecretValue::from(String::from("abc"));
        assert_eq!(value.expose(), "abc");
        assert_eq!(value.len(), 3);
        assert!(!value.is_empty());
        assert!(SecretValue::new("").is_empty());
    }
}
