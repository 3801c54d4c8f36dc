//! The web console: one page and its files, compiled into the binary (no build step, no
//! CDN), served at `/` and `/console/{asset}` without a token.
//!
//! What it owns: the bytes of the console and the headers they are served with. What it
//! does not own: any data. The page reads and changes everything through the public API,
//! with the token the user types into it (kept in the browser's session storage), so the
//! console can do exactly what that token may do, and nothing is decided here.
//!
//! Every console response carries a Content-Security-Policy that allows only the server's
//! own origin: no inline script or style, no other site, no framing. A value shown by the
//! console (an option, a log line) therefore cannot run as code even if the page's own
//! escaping (it writes text, never markup) failed.

use http::{HeaderValue, Response, header};

use super::body::{Body, Resp};

/// The page's policy: its own files and its own API only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'; object-src 'none'";

/// A file of the console other than the page itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Script,
    Style,
    Icon,
}

impl Asset {
    /// Every asset, in the order the OpenAPI document lists their names.
    pub const ALL: [Asset; 3] = [Asset::Script, Asset::Style, Asset::Icon];

    /// The asset served as `/console/{name}`, if any.
    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.file_name() == name)
    }

    /// Its name under `/console/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Asset::Script => "app.js",
            Asset::Style => "app.css",
            Asset::Icon => "icon.svg",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Asset::Script => "text/javascript; charset=utf-8",
            Asset::Style => "text/css; charset=utf-8",
            Asset::Icon => "image/svg+xml",
        }
    }

    fn bytes(self) -> &'static [u8] {
        match self {
            Asset::Script => include_bytes!("console/app.js"),
            Asset::Style => include_bytes!("console/app.css"),
            Asset::Icon => include_bytes!("console/icon.svg"),
        }
    }
}

/// `GET /`: the console's page.
pub(super) fn page() -> Resp {
    served(
        include_bytes!("console/index.html"),
        "text/html; charset=utf-8",
    )
}

/// `GET /console/{asset}`.
pub(super) fn asset(asset: Asset) -> Resp {
    served(asset.bytes(), asset.content_type())
}

/// A console file with the headers every one of them carries. `no-cache` makes the browser
/// ask again each time, so a new binary's console is never mixed with an old one's files.
fn served(bytes: &'static [u8], content_type: &'static str) -> Resp {
    let mut resp = Response::new(Body::full(bytes));
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_found_by_its_name_and_is_not_empty() {
        for a in Asset::ALL {
            assert_eq!(Asset::from_file_name(a.file_name()), Some(a));
            assert!(!a.bytes().is_empty(), "{a:?}");
        }
        assert_eq!(Asset::from_file_name("index.html"), None);
        assert_eq!(Asset::from_file_name("../app.js"), None);
    }

    /// The page loads only the console's own files, by the names the router serves: no
    /// inline script or style (the policy would block them), no other origin.
    #[test]
    fn the_page_refers_only_to_served_assets() {
        let page = std::str::from_utf8(include_bytes!("console/index.html")).unwrap();
        for a in Asset::ALL {
            assert!(
                page.contains(&format!("\"/console/{}\"", a.file_name())),
                "{a:?}"
            );
        }
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains("style=\""), "inline style attribute");
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
