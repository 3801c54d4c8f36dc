//! The web console in a real browser: Debian's chromium, driven by selenium from
//! `tests/console_browser.py`, against a real `paas serve`.
//!
//! - On an anonymous server with the embedded mesos-local (process containerizer, so no
//!   Docker is needed): the reference product, registered through the API, is launched
//!   from the console's form; `ready` arrives over the event stream without a reload; the
//!   events, services and logs tabs show the cluster; it is scaled 2 → 3 and a node is
//!   restarted from the console; then it is destroyed. Screenshots at 1280 × 800 and on a
//!   phone (390 × 844) land in `target/console-screenshots/`.
//! - With `--tokens`: the console asks for a token, shows the API's refusal of a wrong one,
//!   and works with a right one, which survives a reload (session storage).
//!
//! Without chromium the tests say why and skip, except under `CI`, where they fail:
//! `scripts/test.sh` installs chromium, chromium-driver and selenium.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Server, call, register_reference};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser at a time: two chromiums on a small machine make both tests slow and flaky.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the browser is installed; when it is not, says why `test` skips, or fails under CI.
fn browser_installed(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    let why = format!(
        "SKIPPED {test}: {CHROMIUM} or {CHROMEDRIVER} is missing \
         (apt-get install chromium chromium-driver; scripts/test.sh installs them)"
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install the browser: {why}"
    );
    eprintln!("{why}");
    false
}

/// `target/console-screenshots/`, beside the test binaries' own temporary directory.
fn screenshots() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("console-screenshots")
}

/// Runs the selenium script in `mode` against `url`; fails with its output unless it
/// reports `RESULT OK`.
async fn drive(mode: &str, url: &str, extra: &[&str]) {
    let script = common::repo_root().join("tests/console_browser.py");
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .args([mode, url])
        .arg(screenshots())
        .args(extra)
        // Selenium Manager must never fetch a browser or a driver: the script names both.
        .env("SE_OFFLINE", "true")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the browser script finishes within 10 minutes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {mode}\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("RESULT OK"),
        "the console failed in the browser ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

fn assert_png(name: &str) {
    let path = screenshots().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} is not a screenshot ({} bytes)",
        path.display(),
        bytes.len()
    );
}

/// The console's files need no token even when tokens are on (they hold no data), each
/// with its type and a policy that allows only the server's own origin; unknown files are
/// the API's 404.
#[tokio::test]
async fn console_files_are_public_and_allow_only_their_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "admin-token-0123456789,root,admin\n").unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "/console/app.js"),
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "text/event-stream",
        ),
        ("/console/app.css", "text/css; charset=utf-8", "@media"),
        ("/console/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let r = common::get(&format!("{}{path}", s.url)).await;
        assert_eq!(r.status, 200, "{path}");
        let header = |h: &str| r.headers[h].to_str().unwrap().to_owned();
        assert_eq!(header("content-type"), content_type, "{path}");
        let csp = header("content-security-policy");
        assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert!(r.text().contains(needle), "{path}");
    }
    let r = common::get(&format!("{}/console/secrets.txt", s.url)).await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = call("POST", &format!("{}/", s.url), "{}", &[common::JSON]).await;
    assert_eq!(r.status, 405);
    // The page itself is public, the data is not.
    assert_eq!(common::get(&s.api("/clusters")).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn console_launches_follows_scales_and_destroys_a_cluster_in_a_browser() {
    if !browser_installed("console_launches_follows_scales_and_destroys_a_cluster_in_a_browser") {
        return;
    }
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--local-containerizer",
            "process",
            // Ports of our own, below the 31000+ of real Mesos agents and other tests' ranges:
            // the NodeAgents bind them on this host.
            "--local-resources",
            "cpus:4;mem:4096;disk:4096;ports:[30600-30699]",
        ],
    );
    register_reference(&s, &[]).await;
    common::nodes_only(&s).await;
    drive("lifecycle", &s.url, &[]).await;
    for png in [
        "console-1280x800.png",
        "console-logs-1280x800.png",
        "console-phone-390x844.png",
    ] {
        assert_png(png);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn console_asks_for_a_token_and_shows_the_apis_refusal() {
    if !browser_installed("console_asks_for_a_token_and_shows_the_apis_refusal") {
        return;
    }
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "admin-token-0123456789,root,admin\nalice-token-0123456789,alice,user\n",
    )
    .unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    register_reference(&s, &[("authorization", "Bearer admin-token-0123456789")]).await;
    drive("tokens", &s.url, &["alice-token-0123456789", "alice"]).await;
    assert_png("console-wrong-token.png");
}
