//! Identifiers: validated names, cluster ids and reversible Mesos task ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest accepted name. Long enough for any product, version or node name; short enough
/// that a task id (`<uuid>.<node>.<attempt>`) stays far below Mesos' 255-byte id limit.
pub const MAX_NAME_LEN: usize = 64;

/// A product name, product version or node name: `[a-z0-9][a-z0-9._-]*`, at most
/// [`MAX_NAME_LEN`] bytes.
///
/// The rule keeps names safe as URL segments, file names and parts of Mesos ids: no `/`, no
/// `..` tricks, no upper case that would make `Spark` and `spark` two products.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("name must start with a lower-case letter or digit")]
    BadStart,
    #[error("name may contain only a-z, 0-9, '.', '_' and '-' (found {0:?})")]
    BadChar(char),
}

impl Name {
    /// Validates `s` as a name.
    ///
    /// # Errors
    /// [`NameError`] says which rule `s` breaks.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let first = s.chars().next().ok_or(NameError::Empty)?;
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NameError::BadStart);
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(NameError::BadChar(c));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

/// A cluster id: a random v4 uuid, generated atomically at launch (the original system built
/// ids from a counter read and written in two steps, and could hand out one id twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterId(pub Uuid);

impl ClusterId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for ClusterId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A Mesos task id for one launch attempt of one node: `<cluster-id>.<node>.<attempt>`.
///
/// Reversible on purpose (dcos-commons habit): any status update, reconciliation answer or
/// orphan found on an agent can be traced back to its cluster and node without a lookup
/// table. Node names may contain dots, so parsing takes the uuid from the front (fixed 36
/// characters) and the attempt from after the last dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub cluster: ClusterId,
    pub node: Name,
    pub attempt: u32,
}

/// A task id string that does not have our `<uuid>.<node>.<attempt>` shape: not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a paas task id: {0:?}")]
pub struct ForeignTaskId(pub String);

impl TaskId {
    /// Parses a task id produced by [`TaskId`]'s `Display`.
    ///
    /// # Errors
    /// [`ForeignTaskId`] for anything else, e.g. another framework's task.
    pub fn parse(s: &str) -> Result<Self, ForeignTaskId> {
        let bad = || ForeignTaskId(s.to_owned());
        let (uuid, rest) = (s.get(..36).ok_or_else(bad)?, s.get(36..).ok_or_else(bad)?);
        let rest = rest.strip_prefix('.').ok_or_else(bad)?;
        let (node, attempt) = rest.rsplit_once('.').ok_or_else(bad)?;
        Ok(Self {
            cluster: uuid.parse().map_err(|_| bad())?,
            node: Name::parse(node).map_err(|_| bad())?,
            attempt: attempt.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.cluster, self.node, self.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["reference", "1.0.0", "spark", "4.x", "a_b-c.d", "0"] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        let cases: [(&str, NameError); 6] = [
            ("", NameError::Empty),
            ("Spark", NameError::BadStart),
            (".hidden", NameError::BadStart),
            ("-x", NameError::BadStart),
            ("a/b", NameError::BadChar('/')),
            ("a b", NameError::BadChar(' ')),
        ];
        for (bad, why) in cases {
            assert_eq!(Name::parse(bad), Err(why), "{bad:?}");
        }
        assert_eq!(Name::parse(&"a".repeat(65)), Err(NameError::TooLong));
        assert!(Name::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn task_ids_round_trip() {
        let id = TaskId {
            cluster: ClusterId::random(),
            node: Name::parse("worker.1").unwrap(),
            attempt: 7,
        };
        let text = id.to_string();
        assert_eq!(TaskId::parse(&text), Ok(id));
    }

    #[test]
    fn foreign_task_ids_are_refused() {
        for s in [
            "",
            "t1-1234",
            "not-a-uuid-not-a-uuid-not-a-uuid-xxx.node.1",
            "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.node",
            "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.node.x",
            "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.Node.1",
            "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10-node.1",
        ] {
            assert!(TaskId::parse(s).is_err(), "{s:?}");
        }
    }
}
