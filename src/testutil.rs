//! Helpers shared by the crate's unit tests.

use std::collections::HashMap;

/// An annotation map from pairs.
pub fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
