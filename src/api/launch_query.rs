//! The query of a launch (`POST /products/{n}/{v}`): `dry_run=true` to evaluate the launch
//! without making it, `placement_timeout_s=N` to give it its own placement deadline.
//! Parsed by a pure function, so every refusal is table-tested.

/// Longest placement timeout a launch may ask for: a week.
pub const MAX_PLACEMENT_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// Why a launch query is refused (each a 400 `invalid_query`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchQueryError {
    #[error("unknown query parameter {0:?}: expected dry_run or placement_timeout_s")]
    Unknown(String),
    #[error("query parameter {0:?} is given twice")]
    Repeated(&'static str),
    #[error("dry_run must be true or false, not {0:?}")]
    DryRun(String),
    #[error(
        "placement_timeout_s must be a whole number of seconds from 1 to {MAX_PLACEMENT_TIMEOUT_S}, not {0:?}"
    )]
    Timeout(String),
}

/// A parsed launch query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaunchQuery {
    /// Render, validate and evaluate placement; create nothing.
    pub dry_run: bool,
    /// This launch's placement deadline, in seconds from its creation; `None` for the
    /// server's `--placement-timeout`.
    pub placement_timeout_s: Option<u64>,
}

impl LaunchQuery {
    /// Parses the query string (without `?`).
    ///
    /// # Errors
    /// [`LaunchQueryError`] naming the first bad parameter.
    pub fn parse(query: Option<&str>) -> Result<Self, LaunchQueryError> {
        let mut out = Self::default();
        let (mut dry_run, mut timeout) = (None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, slot) = match k {
                "dry_run" => ("dry_run", &mut dry_run),
                "placement_timeout_s" => ("placement_timeout_s", &mut timeout),
                other => return Err(LaunchQueryError::Unknown(other.to_owned())),
            };
            if slot.replace(v).is_some() {
                return Err(LaunchQueryError::Repeated(name));
            }
        }
        if let Some(v) = dry_run {
            out.dry_run = match v {
                "true" => true,
                "false" => false,
                other => return Err(LaunchQueryError::DryRun(other.to_owned())),
            };
        }
        if let Some(v) = timeout {
            out.placement_timeout_s = Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|s| (1..=MAX_PLACEMENT_TIMEOUT_S).contains(s))
                    .ok_or_else(|| LaunchQueryError::Timeout(v.to_owned()))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dry_run_and_the_timeout() {
        let q = |s: &str| LaunchQuery::parse(Some(s));
        assert_eq!(LaunchQuery::parse(None), Ok(LaunchQuery::default()));
        assert_eq!(q(""), Ok(LaunchQuery::default()));
        assert_eq!(
            q("dry_run=true"),
            Ok(LaunchQuery {
                dry_run: true,
                placement_timeout_s: None
            })
        );
        assert_eq!(
            q("placement_timeout_s=30&dry_run=false"),
            Ok(LaunchQuery {
                dry_run: false,
                placement_timeout_s: Some(30)
            })
        );
    }

    #[test]
    fn bad_queries_name_what_is_wrong() {
        let q = |s: &str| LaunchQuery::parse(Some(s)).unwrap_err().to_string();
        assert_eq!(
            q("dryrun=true"),
            "unknown query parameter \"dryrun\": expected dry_run or placement_timeout_s"
        );
        assert_eq!(
            q("dry_run=yes"),
            "dry_run must be true or false, not \"yes\""
        );
        assert_eq!(q("dry_run"), "dry_run must be true or false, not \"\"");
        assert_eq!(
            q("dry_run=true&dry_run=true"),
            "query parameter \"dry_run\" is given twice"
        );
        for bad in ["0", "-5", "1.5", "604801", "ten"] {
            assert!(
                q(&format!("placement_timeout_s={bad}")).starts_with("placement_timeout_s must"),
                "{bad}"
            );
        }
        assert_eq!(
            LaunchQuery::parse(Some("placement_timeout_s=604800"))
                .unwrap()
                .placement_timeout_s,
            Some(MAX_PLACEMENT_TIMEOUT_S)
        );
    }
}
