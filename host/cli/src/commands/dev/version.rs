//! The versions `palisade dev` publishes: the manifest's version with `dev.N` appended to
//! its pre-release (`0.1.0` → `0.1.0-dev.7`, `1.0.0-rc.1` → `1.0.0-rc.1.dev.7`), build
//! metadata kept. Every rebuild is a new version, since the registry refuses the same
//! version with other bytes; `N` goes on from the newest one the dev registry holds, so
//! versions never collide across restarts either. Semver orders them as built (`dev.10`
//! after `dev.9`), and they sort before the release they lead to.

use semver::{Prerelease, Version};

/// The identifier before the build number.
const DEV: &str = "dev";

/// `base` with `dev.n` appended to its pre-release.
pub(crate) fn dev_version(base: &Version, n: u64) -> Version {
    let pre = if base.pre.is_empty() {
        format!("{DEV}.{n}")
    } else {
        format!("{}.{DEV}.{n}", base.pre)
    };
    Version {
        // `dev.N` (after a valid pre-release) is itself a valid pre-release.
        pre: Prerelease::new(&pre).unwrap_or_else(|_| base.pre.clone()),
        ..base.clone()
    }
}

/// The build number of `version` if it is a dev version of `base` (see [`dev_version`]).
pub(crate) fn dev_number(base: &Version, version: &Version) -> Option<u64> {
    if (version.major, version.minor, version.patch) != (base.major, base.minor, base.patch)
        || version.build != base.build
    {
        return None;
    }
    let rest = if base.pre.is_empty() {
        version.pre.as_str().strip_prefix(DEV)?
    } else {
        version
            .pre
            .as_str()
            .strip_prefix(base.pre.as_str())?
            .strip_prefix('.')?
            .strip_prefix(DEV)?
    };
    let digits = rest.strip_prefix('.')?;
    // Semver numeric identifiers have no leading zeros; `dev.07` is not one of ours.
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// The number of the next dev version of `base`, after every one among `published`
/// (version texts; ones that do not parse or are not dev versions of `base` are skipped).
pub(crate) fn next_dev_number<'a>(
    base: &Version,
    published: impl IntoIterator<Item = &'a str>,
) -> u64 {
    published
        .into_iter()
        .filter_map(|text| Version::parse(text).ok())
        .filter_map(|version| dev_number(base, &version))
        .max()
        .map_or(1, |n| n.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn dev_versions_append_to_the_pre_release_and_keep_build_metadata() {
        assert_eq!(dev_version(&v("0.1.0"), 1).to_string(), "0.1.0-dev.1");
        assert_eq!(
            dev_version(&v("1.0.0-rc.1"), 12).to_string(),
            "1.0.0-rc.1.dev.12"
        );
        assert_eq!(
            dev_version(&v("2.3.4+build.5"), 3).to_string(),
            "2.3.4-dev.3+build.5"
        );
    }

    #[test]
    fn dev_versions_sort_as_built_and_before_their_release() {
        let base = v("0.1.0");
        assert!(dev_version(&base, 10) > dev_version(&base, 9));
        assert!(dev_version(&base, 1) < base);
        let rc = v("1.0.0-rc.1");
        assert!(dev_version(&rc, 1) > rc);
        assert!(dev_version(&rc, 1) < v("1.0.0-rc.2"));
    }

    #[test]
    fn a_dev_version_gives_back_its_number_and_nothing_else_does() {
        let base = v("0.1.0");
        for n in [1, 9, 10, 123_456] {
            assert_eq!(dev_number(&base, &dev_version(&base, n)), Some(n));
        }
        let rc = v("1.0.0-rc.1");
        assert_eq!(dev_number(&rc, &dev_version(&rc, 4)), Some(4));
        for other in [
            "0.1.0",
            "0.1.1-dev.3",
            "0.2.0-dev.3",
            "0.1.0-dev",
            "0.1.0-dev.x",
            "0.1.0-dev.3.4",
            "0.1.0-devel.3",
            "0.1.0-rc.1.dev.3",
            "0.1.0-dev.3+meta",
        ] {
            assert_eq!(dev_number(&base, &v(other)), None, "{other}");
        }
        assert_eq!(dev_number(&rc, &v("1.0.0-dev.4")), None);
        assert_eq!(dev_number(&rc, &v("1.0.0-rc.10.dev.4")), None);
    }

    #[test]
    fn numbering_goes_on_after_the_newest_dev_version_of_the_same_base() {
        let base = v("0.1.0");
        assert_eq!(next_dev_number(&base, []), 1);
        assert_eq!(
            next_dev_number(
                &base,
                [
                    "0.1.0-dev.2",
                    "0.1.0-dev.10",
                    "0.1.0-dev.9",
                    "0.2.0-dev.50",
                    "0.1.0",
                    "not a version",
                ]
            ),
            11
        );
        // A new base starts again at 1.
        assert_eq!(next_dev_number(&v("0.2.0"), ["0.1.0-dev.10"]), 1);
    }
}
