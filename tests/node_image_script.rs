//! `deploy/images/build-node-image.sh` against a real Docker daemon: it reuses an image of the
//! same binary instead of building again, but only the node image itself. The product
//! images (`deploy/images/build-product-images.sh`) carry the same `paas.binary.sha256`
//! label, and the script once tagged one of them (the 1.1 GB Spark image) as the node image.
//! Here a decoy with that label stands for them. Without a Docker daemon the test says why
//! it skips, and fails under `CI`.

use std::path::Path;
use std::process::Command;

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

fn label(image: &str, key: &str) -> String {
    let format = format!("{{{{index .Config.Labels \"{key}\"}}}}");
    let out = docker(&["image", "inspect", "-f", &format, image]);
    assert!(out.status.success(), "inspect {image}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the test's images, also when an assertion fails.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

#[test]
fn a_product_image_of_the_same_binary_is_never_taken_for_the_node_image() {
    if !docker(&["info"]).status.success() {
        assert!(std::env::var("CI").is_err(), "CI must have a Docker daemon");
        eprintln!("SKIPPED: no Docker daemon answers");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A "binary" of its own (the script packages any file; it refuses only dynamic ELF
    // files), so its sha256 and the images' names are this test's alone.
    let unique = format!(
        "node-image-test-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    );
    let binary = dir.path().join("paas");
    std::fs::write(&binary, unique.as_bytes()).unwrap();
    let sha = sha256_of(&binary);
    let name = format!("paas-node-test-{}", &sha[..12]);
    let decoy = format!("paas-decoy-test:{}", &sha[..12]);
    let mut cleanup = Images(vec![
        decoy.clone(),
        format!("{name}:{}", &sha[..12]),
        format!("{name}:latest"),
    ]);

    // The decoy: another image, labelled with the same binary, as a product image is.
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY paas /paas\nLABEL paas.binary.sha256=\"{sha}\" \
             org.opencontainers.image.title=\"a product image\"\n"
        ),
    )
    .unwrap();
    let built = docker(&[
        "build",
        "--quiet",
        "--tag",
        &decoy,
        dir.path().to_str().unwrap(),
    ]);
    assert!(built.status.success(), "decoy build: {built:?}");

    let run = || {
        let out = Command::new("deploy/images/build-node-image.sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PAAS_BINARY", &binary)
            .env("PAAS_NODE_IMAGE_NAME", &name)
            .output()
            .expect("run build-node-image.sh");
        assert!(out.status.success(), "build-node-image.sh: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let first = run();
    assert_eq!(first, format!("{name}:{}", &sha[..12]));
    assert_eq!(
        label(&first, "org.opencontainers.image.title"),
        "paas node executor",
        "the node image was built, not the decoy tagged"
    );
    assert_eq!(label(&first, "paas.binary.sha256"), sha);
    // Run again: the node image is found and kept, still not the decoy.
    let before = image_id(&first);
    let second = run();
    assert_eq!(second, first);
    assert_eq!(image_id(&second), before, "reused, not rebuilt");
    assert_ne!(image_id(&second), image_id(&decoy));
    assert_eq!(image_id(&format!("{name}:latest")), before);
    cleanup.0.push(before);
}

fn image_id(image: &str) -> String {
    let out = docker(&["image", "inspect", "-f", "{{.Id}}", image]);
    assert!(out.status.success(), "inspect {image}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
