//! Identifiers: validated names, cluster ids, reversible Mesos task ids and Mesos agent ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
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

/// A cluster id: a v7 uuid (a millisecond timestamp, then 74 random bits), generated
/// atomically at launch (the original system built ids from a counter read and written in
/// two steps, and could hand out one id twice). Ids of earlier versions (v4) stay valid.
///
/// Time-ordered on purpose: the store keys a cluster's head and node records by its id, so
/// the clusters launched (and updated) together sit together in its trees instead of all
/// over them: a batch touches a few pages, and new ids land at the end of the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterId(pub Uuid);

impl ClusterId {
    /// A new id, after every id this process made before (uuid's v7 counter).
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
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
    /// Parses a task id produced by [`TaskId`]'s `Display`, and only such one: parsing is
    /// canonical, so that `TaskId::parse(s)?.to_string() == s`. Two typed task ids are then
    /// equal exactly when their strings are, as Mesos (which compares bytes) sees them: an
    /// upper-case uuid or a zero-padded attempt names another task, not ours.
    ///
    /// # Errors
    /// [`ForeignTaskId`] for anything else, e.g. another framework's task.
    pub fn parse(s: &str) -> Result<Self, ForeignTaskId> {
        let bad = || ForeignTaskId(s.to_owned());
        let (uuid, rest) = (s.get(..36).ok_or_else(bad)?, s.get(36..).ok_or_else(bad)?);
        let rest = rest.strip_prefix('.').ok_or_else(bad)?;
        let (node, attempt) = rest.rsplit_once('.').ok_or_else(bad)?;
        // `Uuid::parse_str` accepts upper-case hex, `u32::from_str` a `+` and leading zeros:
        // none of them is what `Display` writes.
        let canonical_uuid = !uuid.bytes().any(|b| b.is_ascii_uppercase());
        let canonical_attempt = attempt.bytes().all(|b| b.is_ascii_digit())
            && (attempt == "0" || !attempt.starts_with('0'));
        if !(canonical_uuid && canonical_attempt) {
            return Err(bad());
        }
        Ok(Self {
            cluster: uuid.parse().map_err(|_| bad())?,
            node: Name::parse(node).map_err(|_| bad())?,
            attempt: attempt.parse().map_err(|_| bad())?,
        })
    }

    /// Reads a stored `Option<task id>` leniently: a string that is not one of our task ids
    /// reads as `None` instead of failing the whole record it sits in.
    ///
    /// Every version of paas has written task ids with [`TaskId`]'s `Display`, so such a
    /// string is a hand edit or damage. Refusing it would hide the whole cluster from the
    /// API and the scheduler (one unreadable record), for a value that was already dead:
    /// Mesos updates and reconciliation answers are routed by parsing their task id, so
    /// none could ever have reached the node through it. What reading it as `None` costs is
    /// only the KILL by that id (on destroy, on failure, for a retired node), and the id is
    /// gone from the record at its next write; the node keeps its status and all else.
    /// Parseable ids read back exactly, so a record writes back the same strings.
    ///
    /// # Errors
    /// Only if the value is neither a string nor null.
    pub fn deserialize_lenient<'de, D>(d: D) -> Result<Option<Self>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(Option::<String>::deserialize(d)?.and_then(|s| Self::parse(&s).ok()))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.cluster, self.node, self.attempt)
    }
}

impl FromStr for TaskId {
    type Err = ForeignTaskId;
    fn from_str(s: &str) -> Result<Self, ForeignTaskId> {
        Self::parse(s)
    }
}

/// Stored and served as its string, `<cluster-id>.<node>.<attempt>`.
impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Strict: a string that is not one of our task ids is an error (see
/// [`TaskId::deserialize_lenient`] for stored records).
impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A Mesos agent id (`AgentID.value`), as Mesos hands it out: opaque, never parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(String);

impl AgentId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for AgentId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for AgentId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<AgentId> for String {
    fn from(a: AgentId) -> String {
        a.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_v7_and_ordered_as_generated() {
        let ids: Vec<ClusterId> = (0..1000).map(|_| ClusterId::generate()).collect();
        assert!(ids.iter().all(|id| id.0.get_version_num() == 7));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each id sorts after the one before, also within a millisecond"
        );
        // And as the store keys them: their text sorts the same way.
        assert!(ids.windows(2).all(|w| w[0].to_string() < w[1].to_string()));
    }

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
            cluster: ClusterId::generate(),
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

    #[test]
    fn only_the_canonical_spelling_parses() {
        let ours = "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.node.1";
        assert_eq!(TaskId::parse(ours).unwrap().to_string(), ours);
        assert_eq!(
            TaskId::parse("0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.node.0")
                .unwrap()
                .attempt,
            0
        );
        // Each names another Mesos task than `ours` would, yet `Uuid`/`u32` parsing accepts it.
        for s in [
            "0B0D2E63-7C2A-4F4B-9A55-2D0F7C3B1A10.node.1",
            "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.node.01",
            "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.node.+1",
            "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.node.",
        ] {
            assert!(TaskId::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn task_ids_are_stored_as_their_string() {
        let text = "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.worker.1.3";
        let id = TaskId::parse(text).unwrap();
        assert_eq!(serde_json::to_value(&id).unwrap(), serde_json::json!(text));
        let back: TaskId = serde_json::from_value(serde_json::json!(text)).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_value::<TaskId>(serde_json::json!("t1")).is_err());
    }

    #[test]
    fn stored_task_ids_are_read_leniently() {
        #[derive(Deserialize)]
        struct Record {
            #[serde(default, deserialize_with = "TaskId::deserialize_lenient")]
            task_id: Option<TaskId>,
        }
        let read = |v: serde_json::Value| serde_json::from_value::<Record>(v).map(|r| r.task_id);
        let text = "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.node.2";
        assert_eq!(
            read(serde_json::json!({"task_id": text})).unwrap(),
            Some(TaskId::parse(text).unwrap())
        );
        assert_eq!(read(serde_json::json!({"task_id": null})).unwrap(), None);
        assert_eq!(read(serde_json::json!({})).unwrap(), None);
        assert_eq!(
            read(serde_json::json!({"task_id": "t1-1234"})).unwrap(),
            None,
            "not ours: readable, as no task id"
        );
        assert!(read(serde_json::json!({"task_id": 7})).is_err());
    }

    #[test]
    fn agent_ids_display_and_store_as_given() {
        let a = AgentId::new("8f1c-S0");
        assert_eq!(a.to_string(), "8f1c-S0");
        assert_eq!(a.as_str(), "8f1c-S0");
        assert_eq!(format!("agent {a}"), "agent 8f1c-S0");
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!("8f1c-S0")
        );
        let back: AgentId = serde_json::from_str("\"8f1c-S0\"").unwrap();
        assert_eq!(back, a);
        assert_eq!(AgentId::from("x"), AgentId::new(String::from("x")));
    }
}
