//! Bearer-token authentication with two roles.
//!
//! The token file has one `token,user,role` line per token (`role` is `admin` or `user`);
//! blank lines and lines starting with `#` are ignored. Optional `key=value` columns after
//! the role set the user's quotas (`clusters`, `nodes`, `cpus`, `mem` in MB), e.g.
//! `tok…,alice,user,clusters=2,nodes=8`. A user with several tokens may state a quota on
//! any of their lines, but never two different values for one key. Without a token file
//! every request is the anonymous admin, which `serve` allows only on a loopback address.

use std::collections::HashMap;
use std::path::Path;

use http::HeaderMap;
use serde::Serialize;

use super::error::ApiError;
use super::quota::Quota;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May register products and upload scripts (code we execute), and sees every cluster.
    Admin,
    /// May launch clusters and see and destroy their own.
    User,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// # Errors
    /// 403 unless an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "user {:?} is not an admin",
                self.user
            )))
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No token file: everyone is the admin `anonymous`.
    Anonymous,
    Tokens {
        tokens: HashMap<String, Principal>,
        /// Per user; a user without an entry has no limits.
        quotas: HashMap<String, Quota>,
    },
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token file line {line}: {why}")]
    Line { line: usize, why: String },
}

impl Auth {
    /// Loads a token file.
    ///
    /// # Errors
    /// [`TokenFileError`] on I/O errors or a malformed line.
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the token file format.
    ///
    /// # Errors
    /// [`TokenFileError::Line`] names the first bad line.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        let mut quotas: HashMap<String, Quota> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| TokenFileError::Line {
                line: i + 1,
                why: why.to_owned(),
            };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [token, user, role, ref limits @ ..] = fields[..] else {
                return Err(bad("expected token,user,role[,quota=value...]"));
            };
            if token.len() < 16 {
                return Err(bad("token is shorter than 16 characters"));
            }
            if user.is_empty() {
                return Err(bad("user is empty"));
            }
            let role = match role {
                "admin" => Role::Admin,
                "user" => Role::User,
                _ => return Err(bad("role must be admin or user")),
            };
            if tokens
                .insert(
                    token.to_owned(),
                    Principal {
                        user: user.to_owned(),
                        role,
                    },
                )
                .is_some()
            {
                return Err(bad("duplicate token"));
            }
            let mut line_quota = Quota::default();
            for column in limits {
                line_quota.set(column).map_err(|why| bad(&why))?;
            }
            let user_quota = quotas.entry(user.to_owned()).or_default();
            merge(user_quota, &line_quota)
                .map_err(|key| bad(&format!("user {user} already has another {key} quota")))?;
        }
        quotas.retain(|_, q| !q.is_unlimited());
        Ok(Auth::Tokens { tokens, quotas })
    }

    /// The quota of `user`, if they have one.
    pub fn quota(&self, user: &str) -> Option<&Quota> {
        match self {
            Auth::Anonymous => None,
            Auth::Tokens { quotas, .. } => quotas.get(user),
        }
    }

    /// Who sent a request with these headers.
    ///
    /// # Errors
    /// 401 for a missing, malformed or unknown token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let tokens = match self {
            Auth::Anonymous => {
                return Ok(Principal {
                    user: "anonymous".into(),
                    role: Role::Admin,
                });
            }
            Auth::Tokens { tokens, .. } => tokens,
        };
        let header = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization: Bearer <token>".into())
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or_else(|| ApiError::Unauthorized("Authorization must be Bearer <token>".into()))?;
        tokens
            .get(token.trim())
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))
    }
}

/// Adds the limits of `line` to `user`'s; the key set twice with different values, if any.
fn merge(user: &mut Quota, line: &Quota) -> Result<(), &'static str> {
    fn one<T: PartialEq + Copy>(
        have: &mut Option<T>,
        new: Option<T>,
        key: &'static str,
    ) -> Result<(), &'static str> {
        match (*have, new) {
            (Some(a), Some(b)) if a != b => Err(key),
            (None, Some(b)) => {
                *have = Some(b);
                Ok(())
            }
            _ => Ok(()),
        }
    }
    one(&mut user.clusters, line.clusters, "clusters")?;
    one(&mut user.nodes, line.nodes, "nodes")?;
    one(&mut user.cpus, line.cpus, "cpus")?;
    one(&mut user.mem, line.mem, "mem")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn token_file_parses_and_authenticates() {
        let auth = Auth::parse(
            "# comment\n\nadmintoken-0123456789,root,admin\nusertoken-01234567890, alice , user\n",
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(&headers("Bearer admintoken-0123456789"))
                .unwrap(),
            Principal {
                user: "root".into(),
                role: Role::Admin
            }
        );
        assert_eq!(
            auth.authenticate(&headers("Bearer usertoken-01234567890"))
                .unwrap()
                .user,
            "alice"
        );
        for bad in ["Bearer nope", "Basic abc", "admintoken-0123456789"] {
            assert!(
                matches!(
                    auth.authenticate(&headers(bad)),
                    Err(ApiError::Unauthorized(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            auth.authenticate(&HeaderMap::new()),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn bad_token_files_name_the_line() {
        for (text, line) in [
            ("a,b", 1),
            ("\nshort,u,admin", 2),
            ("longenoughtoken-123,u,root", 1),
            ("longenoughtoken-123,,user", 1),
            ("longenoughtoken-123,u,user\nlongenoughtoken-123,v,user", 2),
            ("longenoughtoken-123,u,user,gpus=1", 1),
            ("longenoughtoken-123,u,user,nodes=x", 1),
            ("longenoughtoken-123,u,user,nodes", 1),
            (
                "longenoughtoken-123,u,user,nodes=2\nlongenoughtoken-456,u,user,nodes=3",
                2,
            ),
        ] {
            match Auth::parse(text) {
                Err(TokenFileError::Line { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn quotas_come_from_extra_columns_per_user() {
        let auth = Auth::parse(
            "a-token-0123456789abc,alice,user,clusters=2,nodes=4\n\
             b-token-0123456789abc,alice,user,nodes=4,cpus=2.5,mem=4096\n\
             c-token-0123456789abc,bob,user\n",
        )
        .unwrap();
        assert_eq!(
            auth.quota("alice"),
            Some(&Quota {
                clusters: Some(2),
                nodes: Some(4),
                cpus: Some(2.5),
                mem: Some(4096.0)
            })
        );
        assert_eq!(auth.quota("bob"), None, "no columns, no limits");
        assert_eq!(Auth::Anonymous.quota("anonymous"), None);
    }

    #[test]
    fn anonymous_is_admin() {
        assert!(
            Auth::Anonymous
                .authenticate(&HeaderMap::new())
                .unwrap()
                .is_admin()
        );
    }
}
