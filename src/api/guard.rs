//! Exposure guards that sit in front of routing: what an anonymous server accepts (loopback
//! `Host`, no foreign `Origin`, no form-like bodies on writes), and the per-client cap on
//! open connections.
//!
//! Route access (who may call what) is not decided here; see [`super::routes::Access`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderMap, Method, header};

use super::error::ApiError;

/// Which `Host` headers an anonymous server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostPolicy {
    /// Loopback only: `127.0.0.0/8`, `localhost`, `[::1]` (any port). DNS rebinding needs a
    /// DNS name, so it is refused.
    #[default]
    Loopback,
    /// Also any IP literal: `serve --allow-anonymous` on a non-loopback address is reached by
    /// its IP. An IP literal is never a rebound name, so this still defeats DNS rebinding.
    IpLiterals,
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]`, `[v6]:port`).
fn host_part(value: &str) -> Option<&str> {
    if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':')).then_some(inside);
    }
    Some(value.rsplit_once(':').map_or(value, |(h, _)| h))
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks the `Host` (and `Origin`) of a request to an anonymous server.
///
/// # Errors
/// 400 `host_required` without a `Host`; 403 `host_not_allowed` for a `Host` the policy
/// refuses; 403 `cross_origin` for an `Origin` that is not a loopback one (a web page
/// elsewhere asking the browser to call us).
pub fn check_anonymous_request(headers: &HeaderMap, policy: HostPolicy) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "host_required",
                "a Host header is required (anonymous access answers loopback hosts only)",
            )
        })?;
    let allowed = host_part(host).is_some_and(|h| {
        is_loopback_host(h) || (policy == HostPolicy::IpLiterals && h.parse::<IpAddr>().is_ok())
    });
    if !allowed {
        return Err(ApiError::Refused {
            code: "host_not_allowed",
            message: format!(
                "Host {host:?} is not allowed: without --tokens this server answers only \
                 127.0.0.1, localhost and [::1] (DNS rebinding defence)"
            ),
        });
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = origin
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
            .and_then(host_part);
        if !host.is_some_and(is_loopback_host) {
            return Err(ApiError::Refused {
                code: "cross_origin",
                message: format!(
                    "requests from web pages of origin {origin:?} are refused: without \
                     --tokens only loopback origins may call this server"
                ),
            });
        }
    }
    Ok(())
}

/// Content types a browser may send cross-site without asking first (CORS "simple"
/// requests). No JSON endpoint takes them, so a form on another site cannot call one.
pub fn is_form_like(headers: &HeaderMap) -> Option<String> {
    let ct = super::body::media_type(headers)?;
    matches!(
        ct.as_str(),
        "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
    )
    .then_some(ct)
}

/// Refuses form-like bodies on a request that changes state through a POST or PATCH.
///
/// # Errors
/// 415 `unsupported_media_type`, naming the type.
pub fn check_not_form(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if *method != Method::POST && *method != Method::PATCH {
        return Ok(());
    }
    match is_form_like(headers) {
        None => Ok(()),
        Some(ct) => Err(ApiError::UnsupportedMediaType(format!(
            "expected application/json, got {ct} (form and text bodies are refused: \
             cross-site request defence)"
        ))),
    }
}

/// Open connections per client address, with a cap. Cloned into every connection task; a
/// [`ConnSlot`] gives its place back when the connection ends, however it ends.
#[derive(Clone)]
pub struct ConnLimiter {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; dropping it frees the slot.
pub struct ConnSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnLimiter {
    /// A limiter allowing `max` open connections per client address (0 = no limit).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it already has `max`.
    pub fn admit(&self, ip: IpAddr) -> Option<ConnSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if self.max != 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            ip,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts_of_an_anonymous_server() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:1",
            "localhost",
            "LOCALHOST:5000",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(
                check_anonymous_request(&headers(&[("host", ok)]), HostPolicy::Loopback).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "evil.example",
            "evil.example:5000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:5000",
            "[::1",
            "[::2]:5000",
            "[::1]x",
        ] {
            let e = check_anonymous_request(&headers(&[("host", bad)]), HostPolicy::Loopback)
                .unwrap_err();
            assert_eq!(e.status(), http::StatusCode::FORBIDDEN, "{bad}");
        }
        let e = check_anonymous_request(&HeaderMap::new(), HostPolicy::Loopback).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        // IP literals only when serve was told to answer anonymously elsewhere.
        let h = headers(&[("host", "10.0.0.1:5000")]);
        assert!(check_anonymous_request(&h, HostPolicy::IpLiterals).is_ok());
        let h = headers(&[("host", "evil.example")]);
        assert!(check_anonymous_request(&h, HostPolicy::IpLiterals).is_err());
    }

    #[test]
    fn origins_of_an_anonymous_server() {
        let ok = headers(&[
            ("host", "127.0.0.1:5000"),
            ("origin", "http://localhost:8080"),
        ]);
        assert!(check_anonymous_request(&ok, HostPolicy::Loopback).is_ok());
        for bad in [
            "https://evil.example",
            "null",
            "http://127.0.0.1.evil.example",
        ] {
            let h = headers(&[("host", "127.0.0.1:5000"), ("origin", bad)]);
            let e = check_anonymous_request(&h, HostPolicy::Loopback).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::FORBIDDEN, "{bad}");
        }
    }

    #[test]
    fn form_like_bodies_are_refused_on_writes_only() {
        for ct in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain;charset=UTF-8",
            "Text/Plain",
        ] {
            let h = headers(&[("content-type", ct)]);
            assert!(check_not_form(&Method::POST, &h).is_err(), "{ct}");
            assert!(check_not_form(&Method::PATCH, &h).is_err(), "{ct}");
            assert!(check_not_form(&Method::PUT, &h).is_ok(), "{ct}");
            assert!(check_not_form(&Method::GET, &h).is_ok(), "{ct}");
        }
        for ct in ["application/json", "application/merge-patch+json"] {
            let h = headers(&[("content-type", ct)]);
            assert!(check_not_form(&Method::POST, &h).is_ok(), "{ct}");
        }
        assert!(check_not_form(&Method::POST, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn the_connection_cap_is_per_address_and_slots_come_back() {
        let lim = ConnLimiter::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = lim.admit(a).unwrap();
        let _s2 = lim.admit(a).unwrap();
        assert!(lim.admit(a).is_none());
        assert!(lim.admit(b).is_some());
        drop(s1);
        assert!(lim.admit(a).is_some());
        assert!(ConnLimiter::new(0).admit(a).is_some(), "0 = no cap");
    }
}
