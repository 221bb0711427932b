//! Checks for relative paths inside a bundle.

/// Longest path accepted inside a bundle, in bytes.
pub(crate) const MAX_PATH_LEN: usize = 1024;

/// Checks that `path` is a safe relative path: `/`-separated, not empty, not absolute, no
/// empty, `.` or `..` segments, no backslashes and no control characters. Returns a short
/// reason when it is not.
pub(crate) fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("path is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path is longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return Err("path is absolute");
    }
    if path.contains('\\') {
        return Err("path contains a backslash");
    }
    if path.chars().any(char::is_control) {
        return Err("path contains a control character");
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("path has an empty segment"),
            "." | ".." => return Err("path has a `.` or `..` segment"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_relative_path;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in ["a.wasm", "dir/a.wasm", "ui/assets/app-1.2.js", "x..y"] {
            assert!(check_relative_path(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_unsafe_paths() {
        for bad in [
            "", "/abs", "a//b", "a/", "./a", "a/../b", "..", "a\\b", "a\nb",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_relative_path(&"a".repeat(1025)).is_err());
    }
}
