//! The `paas products|clusters` client against a real server over HTTP.

mod common;

use std::process::{Command, Output};

use common::{Server, repo_root};

fn paas(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paas"))
        .args(args)
        .env("PAAS_URL", url)
        .env_remove("PAAS_TOKEN")
        .current_dir(repo_root().join("examples/products/reference"))
        .output()
        .expect("run paas")
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = paas(url, args);
    assert!(
        out.status.success(),
        "paas {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn products_and_clusters_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let url = s.url.as_str();
    ok(
        url,
        &[
            "products",
            "create",
            "reference",
            "1.0.0",
            "--description",
            "Reference product",
        ],
    );
    ok(
        url,
        &[
            "products",
            "put-template",
            "reference",
            "1.0.0",
            "minimal.json",
        ],
    );
    ok(
        url,
        &[
            "products",
            "put-options",
            "reference",
            "1.0.0",
            "options/size.json",
        ],
    );
    ok(
        url,
        &[
            "products",
            "put-orchestrator",
            "reference",
            "1.0.0",
            "orquestrators/minimal/fabfile.py",
        ],
    );
    let list = ok(url, &["products", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("reference") && l.contains("template,options,orchestrator")),
        "{list}"
    );
    let opts = ok(url, &["products", "part", "reference", "1.0.0", "options"]);
    assert!(opts.contains("\"required\""), "{opts}");

    // Without a scheduler the cluster stays registered: wait for exactly that.
    let out = ok(
        url,
        &[
            "clusters",
            "launch",
            "reference",
            "1.0.0",
            "--opt",
            "size=3",
            "--wait",
            "--until",
            "registered",
        ],
    );
    let id = out.split_whitespace().nth(1).unwrap().to_owned();
    assert!(out.lines().any(|l| l == "registered"), "{out}");
    let table = ok(url, &["clusters", "get", &id]);
    assert!(table.contains("status    registered"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("node")).count(),
        3,
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("workers") && l.contains("node1,node2")),
        "{table}"
    );
    assert!(ok(url, &["clusters", "list"]).contains(&id));

    // A bad option: exit 1 and the server's reason.
    let bad = paas(
        url,
        &[
            "clusters",
            "launch",
            "reference",
            "1.0.0",
            "--opt",
            "size=many",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("size (expected integer)"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // Waiting for `ready` on a cluster that gets destroyed instead fails with the status.
    let del = ok(url, &["clusters", "delete", &id, "--wait"]);
    assert!(del.contains("destroyed"), "{del}");
    let events = ok(url, &["clusters", "events", &id]);
    assert!(
        events.contains("destroying") && events.contains("destroyed"),
        "{events}"
    );
    // An unreachable server is a clear error.
    let down = paas("http://127.0.0.1:1", &["products", "list"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

/// `scale` and `update`: refused with the server's reason while the cluster is not ready;
/// once it is ready (set through the store of the stopped server, as the core would), the
/// change is accepted and `--wait` follows `updating` as progress.
#[test]
fn scale_and_update_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, &[]);
    let url = s.url.clone();
    for args in [
        &["products", "create", "reference", "1.0.0"][..],
        &[
            "products",
            "put-template",
            "reference",
            "1.0.0",
            "minimal.json",
        ],
        &[
            "products",
            "put-options",
            "reference",
            "1.0.0",
            "options/size.json",
        ],
    ] {
        ok(&url, args);
    }
    let out = ok(
        &url,
        &[
            "clusters",
            "launch",
            "reference",
            "1.0.0",
            "--opt",
            "size=2",
        ],
    );
    let id = out.split_whitespace().nth(1).unwrap().to_owned();

    // Not ready: 409 with the reason, exit 1, for both commands.
    for args in [
        &["clusters", "scale", &id, "3", "--wait"][..],
        &["clusters", "update", &id, "--opt", "size=3"],
    ] {
        let out = paas(&url, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("409: cluster")
                && err.contains("is registered; only a ready cluster can be updated"),
            "{args:?}: {err}"
        );
    }
    let bad = paas(&url, &["clusters", "update", &id, "--opt", "size"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad --opt \"size\""));

    s.sigterm();
    common::make_ready_in_store(&data, &id);
    let s = Server::start(&data, &[]);
    let url = s.url.as_str();

    let same = ok(url, &["clusters", "scale", &id, "2", "--wait"]);
    assert_eq!(
        same.trim(),
        format!("cluster {id} ready: nothing to change (generation 1)")
    );
    // Without Mesos the update never ends: --wait shows `updating` as progress and times out.
    let out = paas(
        url,
        &["clusters", "scale", &id, "3", "--wait", "--timeout", "1"],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("cluster {id} updating (generation 2)").as_str(),
            "updating"
        ],
        "only the update's own steps are shown"
    );
    assert!(
        stderr.contains("timed out") && stderr.contains("last status: updating"),
        "{stderr}"
    );
    let table = ok(url, &["clusters", "get", &id]);
    assert!(table.contains("status    updating"), "{table}");
    assert!(table.contains("generation 2"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("node")).count(),
        3,
        "{table}"
    );
    // A change during the update is refused, not queued.
    let out = paas(url, &["clusters", "update", &id, "--opt", "size=4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is updating; only a ready cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = ok(url, &["clusters", "list", "--status", "updating"]);
    assert!(listed.contains(&id), "{listed}");
}

/// `clusters list` follows the cursors past the server's largest page (1000) and prints
/// every cluster once; `--limit` prints the first ones and the cursor to go on from.
#[tokio::test]
async fn clusters_list_pages_through_everything_or_takes_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let url = s.url.as_str();
    common::register_reference(&s, &[]).await;
    let n = 1010;
    let mut ids = Vec::new();
    // 25 at a time, each on its own connection: the server allows 64 per client address,
    // and a connection holds its slot until the server has seen the client close it, which
    // under load can be after the next chunk connected (chunks of 50 were refused, once).
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let launches = chunk.iter().map(|_| common::launch(&s, r#"{"size": 1}"#));
        ids.extend(futures_util::future::join_all(launches).await);
    }
    let rows = |out: &str| -> Vec<String> {
        out.lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    let all = rows(&ok(url, &["clusters", "list"]));
    assert_eq!(all.len(), n);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    ids.sort();
    assert_eq!(unique, ids, "every cluster, once");

    let out = paas(url, &["clusters", "list", "--limit", "5"]);
    assert!(out.status.success());
    assert_eq!(rows(&String::from_utf8_lossy(&out.stdout)), all[..5]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let cursor = err
        .trim()
        .strip_prefix("more clusters follow: add --cursor ")
        .unwrap_or_else(|| panic!("{err}"));
    let next = ok(
        url,
        &["clusters", "list", "--limit", "5", "--cursor", cursor],
    );
    assert_eq!(rows(&next), all[5..10]);
    let rest = paas(
        url,
        &["clusters", "list", "--limit", "2000", "--cursor", cursor],
    );
    assert_eq!(rows(&String::from_utf8_lossy(&rest.stdout)), all[5..]);
    assert!(rest.stderr.is_empty(), "the end: no cursor");
    assert!(
        !paas(url, &["clusters", "list", "--limit", "0"])
            .status
            .success()
    );
}
