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
