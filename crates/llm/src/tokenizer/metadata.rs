//! Typed reads of `tokenizer.ggml.*` keys with tokenizer-specific errors.
//!
//! Integer keys accept any integer width whose value fits (converters disagree on widths);
//! a key of a clearly wrong type is an error rather than silently ignored.

use gguf::Value;

use super::error::TokenizerError;

/// Looks metadata keys up through a closure, so the tokenizer can be built from a
/// `GgufFile` or from any other key/value source (tests build vocabularies by hand).
pub(crate) struct Metadata<'a, F: Fn(&str) -> Option<&'a Value>> {
    get: F,
}

impl<'a, F: Fn(&str) -> Option<&'a Value>> Metadata<'a, F> {
    pub fn new(get: F) -> Self {
        Self { get }
    }

    pub fn value(&self, key: &str) -> Option<&'a Value> {
        (self.get)(key)
    }

    pub fn str_opt(&self, key: &'static str) -> Result<Option<&'a str>, TokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(key, "string", other)),
        }
    }

    pub fn bool_opt(&self, key: &'static str) -> Result<Option<bool>, TokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(key, "bool", other)),
        }
    }

    /// A token id. Negative values (some converters write -1 for "none") read as absent.
    pub fn id_opt(&self, key: &'static str) -> Result<Option<u32>, TokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(i) => Ok(u32::try_from(i).ok()),
                None => Err(wrong_type(key, "integer", v)),
            },
        }
    }

    pub fn array_opt(&self, key: &'static str) -> Result<Option<&'a [Value]>, TokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(&a.items)),
            Some(other) => Err(wrong_type(key, "array", other)),
        }
    }

    /// A string array, e.g. the token texts or the merges.
    pub fn strings_opt(&self, key: &'static str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
        let Some(items) = self.array_opt(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(wrong_type(key, "array of strings", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

pub(crate) fn wrong_type(
    key: &'static str,
    expected: &'static str,
    found: &Value,
) -> TokenizerError {
    TokenizerError::KeyType {
        key,
        expected,
        found: found.describe(),
    }
}
