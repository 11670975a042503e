//! Values committed to this repository, which are therefore no secret: the
//! services' built-in defaults (demo keys so that a fresh clone runs) and
//! the credentials `jyt up` gives the demo city.
//!
//! Outside the environments named in [`DEMO_ENVIRONMENTS`], [`crate::load_from`]
//! refuses every secret a service lists ([`crate::Validate::secrets`]), and
//! every secret-named key of the merged configuration ([`secret_named`]),
//! whose value is one of these.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use config::{Config, File, FileFormat, Value, ValueKind};

/// `JYT_ENV` values under which committed secrets are accepted: a
/// developer's machine, the test suites and demo deployments.
pub const DEMO_ENVIRONMENTS: [&str; 3] = ["local", "test", "demo"];

/// Shorter values are never treated as committed secrets (they are ids,
/// flags and names; a secret that short is refused by validation anyway).
pub const MIN_LEN: usize = 8;

/// Every committed settings file, by its path from the workspace root.
/// A new demo value belongs in one of these files, or in a new file listed
/// here, not in code.
pub const FILES: [(&str, &str); 7] = [
    (
        "services/gateway/config/defaults.toml",
        include_str!("../../../services/gateway/config/defaults.toml"),
    ),
    (
        "services/slot-inventory/config/defaults.toml",
        include_str!("../../../services/slot-inventory/config/defaults.toml"),
    ),
    (
        "services/card-issuing/config/defaults.toml",
        include_str!("../../../services/card-issuing/config/defaults.toml"),
    ),
    (
        "services/channel-accounting/config/defaults.toml",
        include_str!("../../../services/channel-accounting/config/defaults.toml"),
    ),
    (
        "jyt/config/defaults.toml",
        include_str!("../../../jyt/config/defaults.toml"),
    ),
    (
        "jyt/config/demo-credentials.toml",
        include_str!("../../../jyt/config/demo-credentials.toml"),
    ),
    (
        "deploy/demo-secrets.toml",
        include_str!("../../../deploy/demo-secrets.toml"),
    ),
];

/// Whether committed secrets are acceptable in this environment.
pub fn allowed_in(environment: &str) -> bool {
    DEMO_ENVIRONMENTS.contains(&environment)
}

/// Whether `value` (trimmed) is a string committed in one of [`FILES`].
pub fn is_committed(value: &str) -> bool {
    let value = value.trim();
    value.len() >= MIN_LEN && values().contains(value)
}

/// Every string of at least [`MIN_LEN`] characters in [`FILES`]: each
/// string value, and each string in an array, at any depth.
pub fn values() -> &'static BTreeSet<String> {
    static VALUES: OnceLock<BTreeSet<String>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let mut set = BTreeSet::new();
        for (_, text) in FILES {
            // Every file is parsed by its service at start and by this
            // crate's tests, so a parse failure here cannot go unnoticed.
            if let Ok(tree) = parse(text) {
                leaves(&tree, "", &mut |_, v| {
                    if v.trim().len() >= MIN_LEN {
                        set.insert(v.trim().to_owned());
                    }
                });
            }
        }
        set
    })
}

/// A key whose value is a secret, from its dotted path: the last segment
/// names a secret, password or token (hashes of one included) or ends in
/// `_key`, or the value sits in a `keys` table (`crypto.keys.<id>`).
pub fn secret_named(path: &str) -> bool {
    let mut segments = path.rsplit('.');
    let last = segments.next().unwrap_or_default().to_ascii_lowercase();
    let parent = segments.next().unwrap_or_default().to_ascii_lowercase();
    let last = last.split('[').next().unwrap_or_default();
    last.contains("secret")
        || last.contains("password")
        || last.contains("token")
        || last.ends_with("_key")
        || last == "key"
        || parent == "keys"
}

pub(crate) fn parse(text: &str) -> Result<Value, config::ConfigError> {
    Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()?
        .try_deserialize()
}

/// Calls `f(path, value)` for every string leaf of `tree` (array elements
/// as `path[i]`).
pub(crate) fn leaves(tree: &Value, path: &str, f: &mut impl FnMut(&str, &str)) {
    match &tree.kind {
        ValueKind::String(s) => f(path, s),
        ValueKind::Table(table) => {
            for (key, value) in table {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(value, &path, f);
            }
        }
        ValueKind::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                leaves(value, &format!("{path}[{i}]"), f);
            }
        }
        _ => {}
    }
}

/// The secret-named keys of a merged configuration whose value is
/// committed, sorted.
pub(crate) fn committed_secret_keys(tree: &Value) -> Vec<String> {
    let mut found = Vec::new();
    leaves(tree, "", &mut |path, value| {
        if secret_named(path) && is_committed(value) {
            found.push(path.to_owned());
        }
    });
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_committed_file_parses_and_yields_values() {
        for (name, text) in FILES {
            let tree = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut n = 0;
            leaves(&tree, "", &mut |_, _| n += 1);
            assert!(n > 0, "{name} has no string values");
        }
    }

    #[test]
    fn the_demo_values_are_committed_and_short_or_new_ones_are_not() {
        for v in [
            // card-issuing's AES key, blind-index key and e-card secret
            "cEIfJwfQSiHB6KeoWdG6pVdmA84oNkASyufu5H0T2CU=",
            "wigY88kYCH+SNwpIDX/K36eRxWI+FreZBqkpAWRu5Jk=",
            " XxjJ9b/JvRvfa1W68mShcSOquMVhjdhSfK+ij8OIU0U= ",
            // jyt up's operator, console and channel apps
            "demo-operator-token",
            "61112491d046c3f6f8ab801f170d9b2d0c734a17ceff60dee92123fb507cfc3f",
            "demo-city-password",
            "demo-wechat-secret-change-me-0123456789abcdef",
        ] {
            assert!(is_committed(v), "{v}");
        }
        assert!(!is_committed("jyt"), "shorter than MIN_LEN");
        assert!(!is_committed("a-secret-of-our-own-0123456789abcdef"));
    }

    #[test]
    fn secret_names_are_recognised_and_others_are_not() {
        for k in [
            "crypto.keys.k2025",
            "crypto.blind_index_key",
            "ecard.secret",
            "card_issuing.ecard_secret",
            "channel_apps.wxmini.previous_secret",
            "operators.demo-operator.token_sha256",
            "operators.accounts.ann.password_hash",
            "internal_auth.token",
        ] {
            assert!(secret_named(k), "{k}");
        }
        for k in [
            "crypto.active_key_id",
            "redis.key_prefix",
            "hospital_keys.h1.hospital",
            "postgres.url",
            "standing.consumer_name",
        ] {
            assert!(!secret_named(k), "{k}");
        }
    }

    #[test]
    fn only_local_test_and_demo_accept_committed_secrets() {
        for e in ["local", "test", "demo"] {
            assert!(allowed_in(e), "{e}");
        }
        for e in [
            "prod",
            "production",
            "staging",
            "container",
            "compose",
            "Demo",
            "",
        ] {
            assert!(!allowed_in(e), "{e}");
        }
    }

    #[test]
    fn the_helm_demo_master_secret_is_counted_as_committed() {
        let values = include_str!("../../../helm/jyt/values-demo.yaml");
        let master = values
            .lines()
            .find_map(|l| l.trim().strip_prefix("masterSecret:"))
            .map(|v| v.trim().trim_matches('"'))
            .expect("values-demo.yaml sets internalAuth.masterSecret");
        assert!(
            is_committed(master),
            "{master} must be listed in deploy/demo-secrets.toml"
        );
    }
}
