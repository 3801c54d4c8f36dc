//! `paas products push DIR` and `paas products pull NAME VERSION [DIR]`: a product folder to
//! and from the server in one request (`…/products/{n}/{v}/bundle`, a tar).
//!
//! The server checks the bundle; the client only packs what `product.json` names, so a
//! missing or bad file comes back with every other problem in one answer.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{CliError, Client, pretty};
use crate::bundle::{MANIFEST, Manifest, TAR, tar};

/// Packs `dir` (its `product.json` and the files it names) and pushes it.
///
/// # Errors
/// [`CliError`]: no readable `product.json`, a path the bundle format refuses, or the
/// server's answer (which names every bad file).
pub async fn push(c: &Client, dir: &Path) -> Result<(), CliError> {
    let manifest_bytes = read(&dir.join(MANIFEST))?;
    let manifest =
        Manifest::parse(&manifest_bytes).map_err(|why| bad_file(&dir.join(MANIFEST), &why))?;
    let mut files = vec![(MANIFEST.to_owned(), manifest_bytes)];
    for path in manifest.paths().into_iter().skip(1) {
        let rel =
            tar::check_path(&path).map_err(|e| bad_file(&dir.join(MANIFEST), &e.to_string()))?;
        // A missing file is left for the server to report with the others.
        match std::fs::read(dir.join(&rel)) {
            Ok(data) => files.push((rel, data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(file_error(&dir.join(&rel), source)),
        }
    }
    let list: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let body = tar::write(&list).map_err(|e| bad_file(&dir.join(MANIFEST), &e.to_string()))?;
    let (status, answer) = c
        .send(
            "PUT",
            &format!("/products/{}/{}/bundle", manifest.name, manifest.version),
            Some((Bytes::from(body), TAR)),
        )
        .await?;
    let verb = if status == 201 {
        "registered"
    } else {
        "updated"
    };
    let product: serde_json::Value =
        serde_json::from_slice(&answer).map_err(|e| CliError::Decode(e.to_string()))?;
    eprintln!(
        "{verb} {}/{} from {}",
        manifest.name,
        manifest.version,
        dir.display()
    );
    println!("{}", pretty(&product));
    Ok(())
}

/// Pulls a product version's bundle and unpacks it into `dir` (default `NAME-VERSION`),
/// creating folders as needed and replacing files of the same names.
///
/// # Errors
/// [`CliError`]: the server's answer, an archive the bundle format refuses, a write error.
pub async fn pull(
    c: &Client,
    name: &str,
    version: &str,
    dir: Option<PathBuf>,
) -> Result<(), CliError> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(format!("{name}-{version}")));
    let (_, body) = c
        .send("GET", &format!("/products/{name}/{version}/bundle"), None)
        .await?;
    let entries = tar::read(&body).map_err(|e| CliError::Decode(e.to_string()))?;
    for e in &entries {
        // `tar::read` refused absolute and `..` paths: every entry lands inside `dir`.
        let path = dir.join(&e.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| file_error(parent, source))?;
        }
        std::fs::write(&path, &e.data).map_err(|source| file_error(&path, source))?;
    }
    println!(
        "pulled {name}/{version} into {} ({} files)",
        dir.display(),
        entries.len()
    );
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| file_error(path, source))
}

fn file_error(path: &Path, source: std::io::Error) -> CliError {
    CliError::File {
        path: path.display().to_string(),
        source,
    }
}

fn bad_file(path: &Path, why: &str) -> CliError {
    file_error(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned()),
    )
}
