//! The query of `GET /clusters`: its filters, the page size and the cursor, parsed by a pure
//! function ([`ListQuery::parse`]), and the link to the next page.
//!
//! A cursor is opaque to clients: they send back the `next` of the page before. It is
//! checked here (it must be what [`crate::registry::cursor_of`] makes), so a mangled one is
//! a 400 rather than a silently wrong page. Who may see which owner's clusters is decided
//! by the handler, not here.

use std::fmt::Write;

use crate::domain::{ClusterStatus, Timestamp};
use crate::registry::ListFilter;

/// Page size when the query names none.
pub const DEFAULT_LIMIT: usize = 100;

/// Largest page a client may ask for.
pub const MAX_LIMIT: usize = 1000;

/// Why a list query is refused (each a 400 `invalid_filter`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "unknown query parameter {0:?}: expected product, version, status, owner, limit or cursor"
    )]
    Unknown(String),
    #[error("query parameter {0:?} is given twice")]
    Repeated(&'static str),
    #[error("query parameter {0:?} is not valid percent-encoding")]
    Encoding(String),
    #[error("unknown status {0:?}")]
    Status(String),
    #[error("limit must be a whole number from 1 to {MAX_LIMIT}, not {0:?}")]
    Limit(String),
    #[error("invalid cursor {0:?}: pass back the \"next\" value of the previous page")]
    Cursor(String),
}

/// A parsed `GET /clusters` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// The filters as asked; the handler narrows `owner` for a non-admin.
    pub filter: ListFilter,
    pub limit: usize,
    /// Where the page starts (after this cursor); `None` for the first page.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// Parses the query string (without `?`). Values may be percent-encoded; `+` is kept as
    /// it is (names cannot contain spaces).
    ///
    /// # Errors
    /// [`QueryError`] naming the first bad parameter.
    pub fn parse(query: Option<&str>) -> Result<Self, QueryError> {
        let mut filter = ListFilter::default();
        let (mut limit, mut cursor) = (None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(raw).ok_or_else(|| QueryError::Encoding(k.to_owned()))?;
            let (name, slot): (&'static str, &mut Option<String>) = match k {
                "product" => ("product", &mut filter.product),
                "version" => ("version", &mut filter.version),
                "owner" => ("owner", &mut filter.owner),
                "limit" => ("limit", &mut limit),
                "cursor" => ("cursor", &mut cursor),
                "status" => {
                    if filter.status.is_some() {
                        return Err(QueryError::Repeated("status"));
                    }
                    filter.status = Some(
                        v.parse::<ClusterStatus>()
                            .map_err(|()| QueryError::Status(v))?,
                    );
                    continue;
                }
                other => return Err(QueryError::Unknown(other.to_owned())),
            };
            if slot.replace(v).is_some() {
                return Err(QueryError::Repeated(name));
            }
        }
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or(QueryError::Limit(l))?,
        };
        if let Some(c) = &cursor
            && !is_cursor(c)
        {
            return Err(QueryError::Cursor(c.clone()));
        }
        Ok(Self {
            filter,
            limit,
            cursor,
        })
    }

    /// The query string of the page after this one, which starts after `next`: the same
    /// filters (as narrowed by the handler) and limit.
    pub fn next_query(&self, next: &str) -> String {
        let mut q = String::new();
        let f = &self.filter;
        for (k, v) in [
            ("product", f.product.as_deref()),
            ("version", f.version.as_deref()),
            ("status", f.status.map(ClusterStatus::as_str)),
            ("owner", f.owner.as_deref()),
        ] {
            if let Some(v) = v {
                let _ = write!(q, "{k}={}&", encode(v));
            }
        }
        let _ = write!(q, "limit={}&cursor={}", self.limit, encode(next));
        q
    }
}

/// Whether `c` has the shape of [`crate::registry::cursor_of`]: an RFC 3339 time, `_`, a
/// cluster uuid.
fn is_cursor(c: &str) -> bool {
    c.rsplit_once('_').is_some_and(|(at, id)| {
        uuid::Uuid::parse_str(id).is_ok() && Timestamp(at.to_owned()).millis().is_some()
    })
}

/// Percent-decodes `s`; `None` for a bad escape or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `:` (cursors hold
/// times), so the value is safe in a query and in a `Link` header.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURSOR: &str = "2026-12-01T12:00:00.000Z_0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10";

    #[test]
    fn parses_filters_limit_and_cursor() {
        let q = ListQuery::parse(None).unwrap();
        assert_eq!(
            (q.limit, q.cursor, q.filter),
            (DEFAULT_LIMIT, None, ListFilter::default())
        );
        let q = ListQuery::parse(Some(&format!(
            "product=reference&version=1.0.0&status=ready&owner=a%40b&limit=1000&cursor={}",
            CURSOR.replace(':', "%3A")
        )))
        .unwrap();
        assert_eq!(
            q.filter,
            ListFilter {
                owner: Some("a@b".into()),
                status: Some(ClusterStatus::Ready),
                product: Some("reference".into()),
                version: Some("1.0.0".into()),
            }
        );
        assert_eq!((q.limit, q.cursor.as_deref()), (MAX_LIMIT, Some(CURSOR)));
        assert_eq!(ListQuery::parse(Some("limit=1&")).unwrap().limit, 1);
    }

    #[test]
    fn bad_queries_name_what_is_wrong() {
        for (q, want) in [
            ("colour=red", QueryError::Unknown("colour".into())),
            ("status=sleepy", QueryError::Status("sleepy".into())),
            ("limit=0", QueryError::Limit("0".into())),
            ("limit=1001", QueryError::Limit("1001".into())),
            ("limit=-1", QueryError::Limit("-1".into())),
            ("limit=ten", QueryError::Limit("ten".into())),
            ("limit=", QueryError::Limit(String::new())),
            ("limit=5&limit=6", QueryError::Repeated("limit")),
            ("status=ready&status=failed", QueryError::Repeated("status")),
            ("cursor=abc", QueryError::Cursor("abc".into())),
            (
                "cursor=yesterday_0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10",
                QueryError::Cursor("yesterday_0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10".into()),
            ),
            (
                "cursor=2026-12-01T12:00:00.000Z_x",
                QueryError::Cursor("2026-12-01T12:00:00.000Z_x".into()),
            ),
            ("owner=%zz", QueryError::Encoding("owner".into())),
            ("owner=%ff", QueryError::Encoding("owner".into())),
            ("owner=%4", QueryError::Encoding("owner".into())),
        ] {
            assert_eq!(ListQuery::parse(Some(q)), Err(want), "{q}");
        }
        let e = ListQuery::parse(Some("limit=5000"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 1 to 1000") && e.contains("5000"), "{e}");
    }

    #[test]
    fn the_next_query_keeps_the_filters_and_parses_back() {
        let q = ListQuery::parse(Some("status=ready&owner=a%26b&limit=7")).unwrap();
        let next = q.next_query(CURSOR);
        assert_eq!(
            next,
            format!("status=ready&owner=a%26b&limit=7&cursor={CURSOR}")
        );
        let back = ListQuery::parse(Some(&next)).unwrap();
        assert_eq!((back.filter, back.limit), (q.filter, 7));
        assert_eq!(back.cursor.as_deref(), Some(CURSOR));
    }

    #[test]
    fn cursors_are_what_the_registry_makes() {
        let c = crate::domain::Cluster::new(
            crate::domain::ClusterId::generate(),
            "alice".into(),
            crate::domain::Name::parse("p").unwrap(),
            crate::domain::Name::parse("1").unwrap(),
            serde_json::Map::new(),
            crate::domain::cluster::ClusterSpec::parse(
                r#"{"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1}}}"#,
            )
            .unwrap(),
            "s".into(),
            Timestamp::now(),
        );
        assert!(is_cursor(&crate::registry::cursor_of(&c)));
    }
}
