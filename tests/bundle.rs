//! Product bundles, black-box: `PUT`/`GET …/products/{n}/{v}/bundle` and `paas products
//! push|pull` against a real `paas serve` over HTTP, with tokens on.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Resp, Server, call, repo_root};
use paas::bundle::tar;
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("authorization", "Bearer admin-token-0123456789");
const USER: (&str, &str) = ("authorization", "Bearer alice-token-0123456789");
const TAR: (&str, &str) = ("content-type", "application/x-tar");

/// A server with an admin (`root`) and a user (`alice`).
fn server(dir: &Path) -> Server {
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        "admin-token-0123456789,root,admin\nalice-token-0123456789,alice,user\n",
    )
    .unwrap();
    Server::start(&dir.join("data"), &["--tokens", tokens.to_str().unwrap()])
}

fn reference() -> std::path::PathBuf {
    repo_root().join("examples/products/reference")
}

/// The folder as GNU tar packs it (`./` prefixes, directory entries): what an operator
/// would send with `tar -C DIR -cf - .`.
fn gnu_tar(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["--sort=name", "-C"])
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn push(s: &Server, name: &str, version: &str, body: Vec<u8>, who: (&str, &str)) -> Resp {
    let url = s.api(&format!("/products/{name}/{version}/bundle"));
    call("PUT", &url, body, &[who, TAR]).await
}

async fn pull(s: &Server, name: &str, version: &str, who: (&str, &str)) -> Resp {
    let url = s.api(&format!("/products/{name}/{version}/bundle"));
    call("GET", &url, Vec::new(), &[who]).await
}

async fn get(s: &Server, path: &str) -> Resp {
    call("GET", &s.api(path), Vec::new(), &[ADMIN]).await
}

/// The files of a tar, by path.
fn files(tar: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    tar::read(tar)
        .expect("a valid tar")
        .into_iter()
        .map(|e| (e.path, e.data))
        .collect()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

#[tokio::test]
async fn push_pull_push_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let r = push(&s, "reference", "1.0.0", gnu_tar(&reference()), ADMIN).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.headers["location"],
        "/bigdata/api/v1/products/reference/1.0.0"
    );
    let p = r.json();
    assert_eq!(p["description"], "Reference product: minimal");
    assert_eq!(
        p["parts"],
        json!({"template": true, "options": true, "orchestrator": true})
    );
    assert_eq!(p["files"]["options"], "options/size.json");
    // Each part is the file it came from.
    let template = get(&s, "/products/reference/1.0.0/template").await;
    assert_eq!(
        template.body,
        std::fs::read(reference().join("minimal.json")).unwrap()
    );
    let script = get(&s, "/products/reference/1.0.0/orquestrator").await;
    assert_eq!(
        script.body,
        std::fs::read(reference().join("orquestrators/minimal/fabfile.py")).unwrap()
    );

    let first = pull(&s, "reference", "1.0.0", ADMIN).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.headers["content-type"], "application/x-tar");
    let pulled = files(&first.body);
    assert_eq!(
        pulled.keys().collect::<Vec<_>>(),
        [
            "minimal.json",
            "options/size.json",
            "orquestrators/minimal/fabfile.py",
            "product.json"
        ],
        "the folder's own names"
    );
    for (path, data) in &pulled {
        let local = std::fs::read(reference().join(path)).unwrap();
        // Options are stored normalised; the manifest now names every path.
        if path == "options/size.json" || path == "product.json" {
            assert_eq!(json_of(data), json_of(&local), "{path}");
        } else {
            assert_eq!(*data, local, "{path}");
        }
    }

    // Pushing what was pulled changes nothing but the update time.
    let again = push(&s, "reference", "1.0.0", first.body.to_vec(), ADMIN).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["created_at"], p["created_at"]);
    let second = pull(&s, "reference", "1.0.0", ADMIN).await;
    assert_eq!(
        second.body, first.body,
        "push → pull → push → pull is stable"
    );
}

#[tokio::test]
async fn a_bad_bundle_names_every_bad_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let good = gnu_tar(&reference());
    assert_eq!(
        push(&s, "reference", "1.0.0", good, ADMIN).await.status,
        201
    );
    let before = get(&s, "/products/reference/1.0.0").await.json();
    let template = get(&s, "/products/reference/1.0.0/template").await.body;

    let manifest = std::fs::read(reference().join("product.json")).unwrap();
    let bad = tar::write(&[
        ("product.json", &manifest),
        ("minimal.json", b"{{#if}}"),
        (
            "options/size.json",
            br#"{"required": {"size": 2}, "colour": 1}"#,
        ),
        ("stray.txt", b"?"),
    ])
    .unwrap();
    let r = push(&s, "reference", "1.0.0", bad, ADMIN).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let err = &r.json()["error"];
    assert_eq!(err["code"], "invalid_bundle");
    let per_file = err["details"]["files"].as_object().unwrap();
    assert_eq!(
        per_file.keys().collect::<Vec<_>>(),
        [
            "minimal.json",
            "options/size.json",
            "orquestrators/minimal/fabfile.py",
            "stray.txt"
        ],
        "{err}"
    );
    assert!(
        per_file["orquestrators/minimal/fabfile.py"]
            .as_str()
            .unwrap()
            .starts_with("missing")
    );
    assert!(err["message"].as_str().unwrap().contains("4 bad files"));
    assert_eq!(get(&s, "/products/reference/1.0.0").await.json(), before);
    assert_eq!(
        get(&s, "/products/reference/1.0.0/template").await.body,
        template
    );

    // A template that compiles but does not render with the options is the template's
    // error, and a new version with it is not created at all.
    let mut m = json_of(&manifest);
    m["version"] = json!("2.0.0");
    let m = m.to_string();
    let options = std::fs::read(reference().join("options/size.json")).unwrap();
    let unrenderable = tar::write(&[
        ("product.json", m.as_bytes()),
        ("minimal.json", b"{{opts.no_such_option}}"),
        ("options/size.json", &options),
        ("orquestrators/minimal/fabfile.py", b"print()"),
    ])
    .unwrap();
    let r = push(&s, "reference", "2.0.0", unrenderable, ADMIN).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let per_file = r.json()["error"]["details"]["files"].clone();
    assert_eq!(per_file.as_object().unwrap().len(), 1, "{per_file}");
    assert!(per_file["minimal.json"].is_string());
    assert_eq!(get(&s, "/products/reference/2.0.0").await.status, 404);

    // The manifest must name the product it is pushed to.
    let r = push(&s, "other", "1", gnu_tar(&reference()), ADMIN).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["details"]["files"]["product.json"]
            .as_str()
            .unwrap()
            .contains("pushed to other/1")
    );
}

#[tokio::test]
async fn only_admins_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let r = push(&s, "reference", "1.0.0", gnu_tar(&reference()), USER).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(get(&s, "/products/reference/1.0.0").await.status, 404);
    assert_eq!(
        push(&s, "reference", "1.0.0", gnu_tar(&reference()), ADMIN)
            .await
            .status,
        201
    );
    assert_eq!(pull(&s, "reference", "1.0.0", USER).await.status, 403);
    let url = s.api("/products/reference/1.0.0/bundle");
    assert_eq!(call("GET", &url, Vec::new(), &[]).await.status, 401);
}

#[tokio::test]
async fn odd_tar_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let good = gnu_tar(&reference());
    let traversal = tar::write(&[("product.json", b"{}")]).map(|mut t| {
        // Renamed after writing (the writer refuses it), checksum fixed up.
        t[..100].fill(0);
        t[..13].copy_from_slice(b"../evil.json\0");
        t[148..156].fill(b' ');
        let sum: u32 = t[..512].iter().map(|b| u32::from(*b)).sum();
        t[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        t
    });
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "truncated",
            good[..good.len() / 2 + 100].to_vec(),
            "truncated",
        ),
        ("traversal", traversal.unwrap(), ".."),
        (
            "garbage",
            b"not a tar at all".repeat(64),
            "not a ustar header",
        ),
        ("empty", Vec::new(), "product.json"),
        (
            "a JSON body",
            br#"{"name": "reference"}"#.to_vec(),
            "truncated",
        ),
    ];
    for (what, body, says) in cases {
        let r = push(&s, "reference", "1.0.0", body, ADMIN).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_bundle", "{what}");
        assert!(r.text().contains(says), "{what}: {}", r.text());
    }
    // A symlink in the folder is refused, not followed.
    let linked = tempfile::tempdir().unwrap();
    std::fs::copy(
        reference().join("product.json"),
        linked.path().join("product.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", linked.path().join("minimal.json")).unwrap();
    let r = push(&s, "reference", "1.0.0", gnu_tar(linked.path()), ADMIN).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("symbolic link"), "{}", r.text());
    // A text body is not a bundle.
    let url = s.api("/products/reference/1.0.0/bundle");
    let r = call("PUT", &url, good, &[ADMIN, ("content-type", "text/plain")]).await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(
        get(&s, "/products/reference/1.0.0").await.status,
        404,
        "nothing was stored"
    );
}

#[tokio::test]
async fn pulling_a_product_without_every_part_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let r = call(
        "POST",
        &s.api("/products"),
        r#"{"name": "half", "version": "1"}"#,
        &[ADMIN, common::JSON],
    )
    .await;
    assert_eq!(r.status, 201);
    let r = pull(&s, "half", "1", ADMIN).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("has no template"));
    assert_eq!(pull(&s, "none", "1", ADMIN).await.status, 404);
}

fn paas(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paas"))
        .args(args)
        .env("PAAS_URL", url)
        .env("PAAS_TOKEN", "admin-token-0123456789")
        .output()
        .expect("run paas")
}

/// `paas products push DIR` and `pull NAME VERSION DIR` for every example product.
#[tokio::test]
async fn the_cli_pushes_and_pulls_every_example() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    for (name, version, folder) in [
        ("reference", "1.0.0", "reference"),
        ("slurm", "22.05", "slurm/22.05"),
        ("spark", "4.x", "spark/4.x"),
    ] {
        let src = repo_root().join("examples/products").join(folder);
        let out = paas(&s.url, &["products", "push", src.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("registered"));
        let into = dir.path().join(name);
        let out = paas(
            &s.url,
            &["products", "pull", name, version, into.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = json_of(&std::fs::read(into.join("product.json")).unwrap());
        for key in ["template", "options", "orchestrator"] {
            let path = manifest[key].as_str().unwrap();
            let (a, b) = (
                std::fs::read(src.join(path)).unwrap(),
                std::fs::read(into.join(path)).unwrap(),
            );
            if key == "options" {
                assert_eq!(json_of(&a), json_of(&b), "{name} {path}");
            } else {
                assert_eq!(a, b, "{name} {path}");
            }
        }
        // The pulled folder pushes back as an update.
        let out = paas(&s.url, &["products", "push", into.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("updated"));
    }
    // A folder with a bad file: the CLI exits 1 with the server's per-file message.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("product.json"),
        r#"{"name": "broken", "version": "1"}"#,
    )
    .unwrap();
    std::fs::write(broken.join("template.json"), "{{#if}}").unwrap();
    let out = paas(&s.url, &["products", "push", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for file in ["template.json", "options.json", "orchestrate.py"] {
        assert!(err.contains(file), "{file}: {err}");
    }
}
