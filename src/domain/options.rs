//! The options document of a product and the validation of a user's launch options.
//!
//! A document is `{required, optional, advanced, descriptions}`. The *value* of each key in
//! `required` is an example that fixes the key's type; values in `optional` and `advanced`
//! are defaults. Users override defaults; numbers may arrive as JSON numbers or as numeric
//! strings (the seed shows both `"size": "2"` and httpie's `size:=2`).
//!
//! Two more rules keep a user inside what the product's author allowed:
//! - `advanced` options are the admin's: a user who sets one is refused (the caller answers
//!   403); see [`OptionsDoc::admin_only`].
//! - `"enum": {"key": [allowed, …]}` lists the values an option may take, in any section.
//!
//! String values (at any depth) may not hold control characters: a newline in a value would
//! become a new line of a config file.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A validated options document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsDoc {
    #[serde(default)]
    pub required: Map<String, Value>,
    #[serde(default)]
    pub optional: Map<String, Value>,
    #[serde(default)]
    pub advanced: Map<String, Value>,
    /// Free text per key, shown to users; never interpreted.
    #[serde(default)]
    pub descriptions: Map<String, Value>,
    /// The values an option may take: option → non-empty list (each of the option's type).
    #[serde(default, rename = "enum", skip_serializing_if = "Map::is_empty")]
    pub allowed: Map<String, Value>,
}

/// The JSON type an option must have, taken from its example or default value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionKind {
    Integer,
    Number,
    String,
    Boolean,
    Array,
    Object,
}

impl OptionKind {
    fn of(v: &Value) -> Option<Self> {
        Some(match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Self::Integer,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Bool(_) => Self::Boolean,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
            Value::Null => return None,
        })
    }

    /// `v` converted to this kind, accepting the textual forms a form or httpie `k=v` sends.
    fn coerce(self, v: &Value) -> Option<Value> {
        match (self, v) {
            (Self::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Some(v.clone()),
            (Self::Integer, Value::Number(n)) => {
                // 2.0 is an integer written as a float; 2.5 is not.
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 9.0e15).then(|| Value::from(f as i64))
            }
            (Self::Integer, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
            (Self::Number, Value::Number(_)) => Some(v.clone()),
            (Self::Number, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            (Self::String, Value::String(_)) => Some(v.clone()),
            (Self::Boolean, Value::Bool(_)) => Some(v.clone()),
            (Self::Boolean, Value::String(s)) => match s.as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            (Self::Array, Value::Array(_)) | (Self::Object, Value::Object(_)) => Some(v.clone()),
            _ => None,
        }
    }
}

/// Why an options document is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsDocError {
    #[error(
        "options document is not of the form {{required, optional, advanced, descriptions}}: {0}"
    )]
    Shape(String),
    #[error("option {0:?} appears in more than one section")]
    Duplicate(String),
    #[error("option {0:?} has a null value; its value fixes its type")]
    Null(String),
    #[error("option name {0:?} is empty or has control characters")]
    BadKey(String),
    #[error("enum {0:?}: {1}")]
    Enum(String, String),
}

/// What is wrong with a user's options, every key listed (never just the first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OptionsError {
    /// Required keys the user did not give.
    pub missing: Vec<String>,
    /// Keys the product does not define.
    pub unknown: Vec<String>,
    /// Keys whose value has the wrong type, with the type expected.
    pub wrong_type: BTreeMap<String, OptionKind>,
    /// Keys whose value is not one of the product's `enum`, with the values allowed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub not_allowed: BTreeMap<String, Vec<Value>>,
    /// Keys whose value holds a control character (a newline, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub control_characters: Vec<String>,
}

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "missing required options: {}",
                self.missing.join(", ")
            ));
        }
        if !self.unknown.is_empty() {
            parts.push(format!("unknown options: {}", self.unknown.join(", ")));
        }
        if !self.wrong_type.is_empty() {
            let list: Vec<String> = self
                .wrong_type
                .iter()
                .map(|(k, kind)| {
                    format!(
                        "{k} (expected {})",
                        serde_json::to_value(kind)
                            .unwrap_or_default()
                            .as_str()
                            .unwrap_or("?")
                    )
                })
                .collect();
            parts.push(format!("wrong type: {}", list.join(", ")));
        }
        if !self.not_allowed.is_empty() {
            let list: Vec<String> = self
                .not_allowed
                .iter()
                .map(|(k, allowed)| {
                    let values: Vec<String> = allowed.iter().map(Value::to_string).collect();
                    format!("{k} (allowed: {})", values.join(", "))
                })
                .collect();
            parts.push(format!("value not allowed: {}", list.join("; ")));
        }
        if !self.control_characters.is_empty() {
            parts.push(format!(
                "control characters (e.g. a newline) in: {}",
                self.control_characters.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for OptionsError {}

impl OptionsDoc {
    /// Parses and checks an uploaded document.
    ///
    /// # Errors
    /// [`OptionsDocError`] for a wrong shape, a key in two sections, a null value or a bad key.
    pub fn from_value(v: Value) -> Result<Self, OptionsDocError> {
        if !v.is_object() {
            return Err(OptionsDocError::Shape("expected a JSON object".into()));
        }
        let doc: OptionsDoc =
            serde_json::from_value(v).map_err(|e| OptionsDocError::Shape(e.to_string()))?;
        let mut seen = BTreeSet::new();
        for (k, v) in doc.sections() {
            if k.is_empty() || k.chars().any(char::is_control) {
                return Err(OptionsDocError::BadKey(k.clone()));
            }
            if !seen.insert(k) {
                return Err(OptionsDocError::Duplicate(k.clone()));
            }
            if v.is_null() {
                return Err(OptionsDocError::Null(k.clone()));
            }
        }
        for (k, list) in &doc.allowed {
            let bad = |why: &str| Err(OptionsDocError::Enum(k.clone(), why.to_owned()));
            let Some(kind) = doc.example(k).and_then(OptionKind::of) else {
                return bad("is not an option of this document");
            };
            let Some(values) = list.as_array().filter(|a| !a.is_empty()) else {
                return bad("must be a non-empty list of allowed values");
            };
            if values.iter().any(|v| kind.coerce(v).is_none()) {
                return bad("every allowed value must have the option's type");
            }
            let default = doc.optional.get(k).or_else(|| doc.advanced.get(k));
            if default.is_some_and(|d| !is_one_of(kind, d, values)) {
                return bad("the option's default is not one of the allowed values");
            }
        }
        Ok(doc)
    }

    /// The example or default value of `key`, which fixes its type.
    pub fn example(&self, key: &str) -> Option<&Value> {
        self.required
            .get(key)
            .or_else(|| self.optional.get(key))
            .or_else(|| self.advanced.get(key))
    }

    /// The `advanced` options among `user`'s keys: only an admin may set them.
    pub fn admin_only(&self, user: &Map<String, Value>) -> Vec<String> {
        user.keys()
            .filter(|k| self.advanced.contains_key(*k))
            .cloned()
            .collect()
    }

    fn sections(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.required
            .iter()
            .chain(&self.optional)
            .chain(&self.advanced)
    }

    /// The options used to validate a template at upload: every default, and the example value
    /// of every required key.
    pub fn defaults_with_examples(&self) -> Map<String, Value> {
        self.sections()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Merges `user` over the defaults, converting numeric and boolean strings.
    ///
    /// # Errors
    /// [`OptionsError`] lists every missing, unknown and mistyped key.
    pub fn resolve(&self, user: &Map<String, Value>) -> Result<Map<String, Value>, OptionsError> {
        let mut err = OptionsError::default();
        let mut out: Map<String, Value> = self
            .optional
            .iter()
            .chain(&self.advanced)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in user {
            let Some(example) = self.example(k) else {
                err.unknown.push(k.clone());
                continue;
            };
            // invariant: from_value refused null examples, so every example has a kind.
            let Some(kind) = OptionKind::of(example) else {
                continue;
            };
            match kind.coerce(v) {
                Some(v) if has_control_char(&v) => err.control_characters.push(k.clone()),
                Some(v) => {
                    let allowed = self.allowed.get(k).and_then(Value::as_array);
                    match allowed {
                        Some(list) if !is_one_of(kind, &v, list) => {
                            err.not_allowed.insert(k.clone(), list.clone());
                        }
                        _ => {
                            out.insert(k.clone(), v);
                        }
                    }
                }
                None => {
                    err.wrong_type.insert(k.clone(), kind);
                }
            }
        }
        err.missing = self
            .required
            .keys()
            .filter(|k| !user.contains_key(*k))
            .cloned()
            .collect();
        if err == OptionsError::default() {
            Ok(out)
        } else {
            Err(err)
        }
    }
}

/// Whether `v`, taken as `kind`, equals one of `allowed` (numbers by value: `2` is `2.0`).
fn is_one_of(kind: OptionKind, v: &Value, allowed: &[Value]) -> bool {
    let Some(v) = kind.coerce(v) else {
        return false;
    };
    allowed
        .iter()
        .filter_map(|a| kind.coerce(a))
        .any(|a| match (&a, &v) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            _ => a == v,
        })
}

/// Whether a string anywhere in `v` (keys included) holds a control character.
fn has_control_char(v: &Value) -> bool {
    match v {
        Value::String(s) => s.chars().any(char::is_control),
        Value::Array(a) => a.iter().any(has_control_char),
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.chars().any(char::is_control) || has_control_char(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> OptionsDoc {
        OptionsDoc::from_value(json!({
            "required": {"size": 1},
            "optional": {"cpu": 0.5, "name": "x", "debug": false},
            "advanced": {"heap": 1024, "extra": ["a"]},
            "descriptions": {"size": "number of nodes"}
        }))
        .unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_and_overrides() {
        let got = doc()
            .resolve(&obj(json!({"size": 2, "heap": "2048"})))
            .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"size": 2, "cpu": 0.5, "name": "x", "debug": false, "heap": 2048, "extra": ["a"]})
        );
    }

    #[test]
    fn numeric_and_boolean_strings_are_converted() {
        let cases = [
            (json!({"size": "2"}), "size", json!(2)),
            (json!({"size": " 3 "}), "size", json!(3)),
            (json!({"size": 4.0}), "size", json!(4)),
            (json!({"size": 1, "cpu": "1.5"}), "cpu", json!(1.5)),
            (json!({"size": 1, "cpu": 2}), "cpu", json!(2)),
            (json!({"size": 1, "debug": "true"}), "debug", json!(true)),
        ];
        for (input, key, want) in cases {
            let got = doc().resolve(&obj(input.clone())).unwrap();
            assert_eq!(got[key], want, "{input}");
        }
    }

    #[test]
    fn every_bad_key_is_listed() {
        let err = doc()
            .resolve(&obj(
                json!({"cpu": "lots", "bogus": 1, "other": 2, "name": 5}),
            ))
            .unwrap_err();
        assert_eq!(err.missing, vec!["size"]);
        assert_eq!(err.unknown, vec!["bogus", "other"]);
        assert_eq!(
            err.wrong_type,
            BTreeMap::from([
                ("cpu".to_owned(), OptionKind::Number),
                ("name".to_owned(), OptionKind::String)
            ])
        );
        let text = err.to_string();
        for k in ["size", "bogus", "other", "cpu", "name"] {
            assert!(text.contains(k), "{text}");
        }
    }

    #[test]
    fn wrong_types_are_refused() {
        for bad in [
            json!({"size": "2.5"}),
            json!({"size": 2.5}),
            json!({"size": "two"}),
            json!({"size": true}),
            json!({"size": null}),
            json!({"size": [2]}),
        ] {
            let err = doc().resolve(&obj(bad.clone())).unwrap_err();
            assert_eq!(err.wrong_type.len(), 1, "{bad}");
        }
    }

    #[test]
    fn bad_documents_are_refused() {
        let cases = [
            json!([]),
            json!({"required": []}),
            json!({"required": {"a": 1}, "optional": {"a": 2}}),
            json!({"optional": {"a": null}}),
            json!({"requierd": {"a": 1}}),
            json!({"optional": {"": 1}}),
        ];
        for c in cases {
            assert!(OptionsDoc::from_value(c.clone()).is_err(), "{c}");
        }
        assert!(OptionsDoc::from_value(json!({})).is_ok());
    }

    #[test]
    fn advanced_options_are_named_for_the_admin_check() {
        let user = obj(json!({"size": 2, "heap": 1, "extra": [], "cpu": 1}));
        assert_eq!(doc().admin_only(&user), ["heap", "extra"]);
        assert!(doc().admin_only(&obj(json!({"size": 2}))).is_empty());
    }

    #[test]
    fn enums_are_enforced_and_named_with_their_values() {
        let d = OptionsDoc::from_value(json!({
            "required": {"size": 1},
            "optional": {"mode": "fast", "cpu": 0.5},
            "enum": {"mode": ["fast", "safe"], "size": [1, 2, 3], "cpu": [0.5, 1]}
        }))
        .unwrap();
        let ok = d
            .resolve(&obj(json!({"size": "2", "mode": "safe", "cpu": 1.0})))
            .unwrap();
        assert_eq!(ok["size"], json!(2));
        let err = d
            .resolve(&obj(json!({"size": 4, "mode": "evil"})))
            .unwrap_err();
        assert_eq!(
            err.not_allowed,
            BTreeMap::from([
                ("mode".to_owned(), vec![json!("fast"), json!("safe")]),
                ("size".to_owned(), vec![json!(1), json!(2), json!(3)])
            ])
        );
        let text = err.to_string();
        assert!(text.contains(r#"mode (allowed: "fast", "safe")"#), "{text}");
        assert!(text.contains("size (allowed: 1, 2, 3)"), "{text}");
    }

    #[test]
    fn bad_enums_are_refused_at_upload() {
        for bad in [
            json!({"optional": {"a": "x"}, "enum": {"b": ["x"]}}),
            json!({"optional": {"a": "x"}, "enum": {"a": []}}),
            json!({"optional": {"a": "x"}, "enum": {"a": "x"}}),
            json!({"optional": {"a": "x"}, "enum": {"a": ["y"]}}),
            json!({"optional": {"a": 1}, "enum": {"a": [1, "two"]}}),
        ] {
            let e = OptionsDoc::from_value(bad.clone()).unwrap_err();
            assert!(matches!(e, OptionsDocError::Enum(..)), "{bad}: {e}");
        }
    }

    #[test]
    fn control_characters_are_refused_at_any_depth() {
        let err = doc()
            .resolve(&obj(json!({
                "size": 1, "name": "{{cluster_id}}\nSlurmUser=evil", "extra": ["a\rb"]
            })))
            .unwrap_err();
        assert_eq!(err.control_characters, ["name", "extra"]);
        assert!(err.to_string().contains("control characters"), "{err}");
        assert!(
            doc()
                .resolve(&obj(json!({"size": 1, "name": "a {{b}} c"})))
                .is_ok()
        );
    }

    #[test]
    fn upload_defaults_include_required_examples() {
        let d = doc().defaults_with_examples();
        assert_eq!(d["size"], json!(1));
        assert_eq!(d["heap"], json!(1024));
    }
}
