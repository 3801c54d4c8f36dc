//! Product bundles: a product folder (`product.json`, its template, options document and
//! orchestration script) as one tar, pushed with `PUT …/products/{n}/{v}/bundle` and pulled
//! with `GET` on the same path. Both are admin-only: the bundle carries the orchestration
//! script, which is code the framework runs.
//!
//! A push is all or nothing: every file is checked first (the manifest parses and names
//! this product, the template compiles and renders with the options' defaults, the options
//! document is valid, the script is there), every problem is reported at once, one per file,
//! and only a bundle without any is stored, in one store commit. The format itself (the
//! manifest, the tar) is [`crate::bundle`], shared with the CLI.

use std::collections::BTreeMap;

use http::{HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::AppState;
use super::blocking;
use super::body::{Resp, json_response, media_type, raw_response, read_body, with_location};
use super::error::ApiError;
use super::products::{MAX_DESCRIPTION, check_template, get_product, product_url, product_view};
use crate::bundle::{MANIFEST, Manifest, TAR, tar};
use crate::domain::options::OptionsDoc;
use crate::domain::{Name, Part, Product, Timestamp};

/// A bundle that passed every check: the product record to store and its parts.
#[derive(Debug)]
struct Checked {
    product: Product,
    /// In [`Part::ALL`] order.
    parts: Vec<(Part, Vec<u8>)>,
}

/// What is wrong, per file of the bundle (the manifest's path for the manifest).
type Problems = BTreeMap<String, String>;

/// Checks a bundle's files against the product `name`/`version` it is pushed to.
/// `renders` checks that a template renders with an options document's defaults (the same
/// check a part upload makes).
fn check(
    name: &Name,
    version: &Name,
    mut files: BTreeMap<String, Vec<u8>>,
    now: &Timestamp,
    renders: impl Fn(&Product, &str, &OptionsDoc) -> Result<(), String>,
) -> Result<Checked, Problems> {
    let mut problems = Problems::new();
    let Some(manifest) = files.remove(MANIFEST) else {
        problems.insert(MANIFEST.into(), "missing: every bundle has one".into());
        return Err(problems);
    };
    // Without readable paths the other files cannot be found: stop there. Anything else
    // wrong with the manifest is reported with the other files' problems.
    let manifest = match Manifest::parse(&manifest).and_then(check_layout) {
        Ok(m) => m,
        Err(why) => {
            problems.insert(MANIFEST.into(), why);
            return Err(problems);
        }
    };
    if let Err(why) = check_identity(&manifest, name, version) {
        problems.insert(MANIFEST.into(), why);
    }
    let layout = manifest.files();
    let product = Product {
        name: name.clone(),
        version: version.clone(),
        description: manifest.description,
        logo_url: manifest.logo_url,
        created_at: now.clone(),
        updated_at: now.clone(),
        parts: Default::default(),
        files: Some(layout.clone()),
    };
    let mut parts = Vec::new();
    let mut template = None;
    let mut options = None;
    for part in Part::ALL {
        let path = layout.of(part);
        let Some(data) = files.remove(path) else {
            problems.insert(
                path.to_owned(),
                format!("missing: product.json names it as the {}", part.as_str()),
            );
            continue;
        };
        let checked = match part {
            Part::Template => check_template_text(&data).map(|t| template = Some(t)),
            Part::Options => check_options(&data).map(|o| options = Some(o)),
            Part::Orchestrator if data.is_empty() => Err("the script is empty".into()),
            Part::Orchestrator => Ok(()),
        };
        match checked {
            Err(why) => {
                problems.insert(path.to_owned(), why);
            }
            Ok(()) => parts.push((part, data)),
        }
    }
    if let Some((doc, normalised)) = options {
        if let Some(Err(why)) = template.map(|t| renders(&product, &t, &doc)) {
            problems.insert(layout.template.clone(), why);
        }
        // Options are stored normalised, as `PUT …/options` stores them.
        if let Some(p) = parts.iter_mut().find(|(p, _)| *p == Part::Options) {
            p.1 = normalised;
        }
    }
    for extra in files.into_keys() {
        problems.insert(extra, "not named by product.json".into());
    }
    if problems.is_empty() {
        Ok(Checked { product, parts })
    } else {
        Err(problems)
    }
}

/// The manifest names this product, with a description of an allowed length.
fn check_identity(m: &Manifest, name: &Name, version: &Name) -> Result<(), String> {
    if m.name != name.as_str() || m.version != version.as_str() {
        return Err(format!(
            "names {}/{} but the bundle is pushed to {name}/{version}",
            m.name, m.version
        ));
    }
    if m.description.len() > MAX_DESCRIPTION {
        return Err(format!(
            "description is longer than {MAX_DESCRIPTION} bytes"
        ));
    }
    Ok(())
}

/// The manifest's paths are relative, inside the folder, written plainly, and distinct.
fn check_layout(m: Manifest) -> Result<Manifest, String> {
    let paths = m.paths();
    for (i, path) in paths.iter().enumerate().skip(1) {
        if paths[..i].contains(path) {
            return Err(format!("{path:?} is named for two files"));
        }
        if tar::check_path(path).map_err(|e| e.to_string())? != *path {
            return Err(format!(
                "{path:?}: write paths without a leading ./ or trailing /"
            ));
        }
    }
    Ok(m)
}

fn check_template_text(data: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("template is not UTF-8: {e}"))?;
    handlebars::Template::compile(text)
        .map_err(|e| crate::domain::template::TemplateError::from(e).to_string())?;
    Ok(text.to_owned())
}

/// The options document and its stored (normalised) form.
fn check_options(data: &[u8]) -> Result<(OptionsDoc, Vec<u8>), String> {
    let value: Value = serde_json::from_slice(data).map_err(|e| format!("invalid JSON: {e}"))?;
    let doc = OptionsDoc::from_value(value).map_err(|e| e.to_string())?;
    let stored = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    Ok((doc, stored))
}

/// The 400 for a bundle with problems: every file's in `details.files`.
fn invalid(problems: Problems) -> ApiError {
    let summary: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    ApiError::BadRequest {
        code: "invalid_bundle",
        message: format!(
            "the bundle has {} bad file{}: {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            summary.join("; ")
        ),
        details: Some(json!({ "files": problems })),
    }
}

/// `PUT /products/{name}/{version}/bundle`: registers or replaces the version with every
/// file of the tar body, or changes nothing. 201 and `Location` when the version is new,
/// 200 when it replaced one.
pub(super) async fn push(
    state: &AppState,
    name: Name,
    version: Name,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    if let Some(ct) = media_type(req.headers()).filter(|ct| {
        !(ct.is_empty() || ct == TAR || ct == "application/tar" || ct == "application/octet-stream")
    }) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a bundle is sent as {TAR}, got {ct}"
        )));
    }
    let body = read_body(state, req).await?;
    let entries = tar::read(&body).map_err(|e| ApiError::BadRequest {
        code: "invalid_bundle",
        message: format!("the body is not a bundle tar: {e}"),
        details: None,
    })?;
    let files: BTreeMap<String, Vec<u8>> = entries.into_iter().map(|e| (e.path, e.data)).collect();
    let checked = check(&name, &version, files, &Timestamp::now(), |p, t, doc| {
        check_template(state, p, t, doc)
    })
    .map_err(invalid)?;
    let (stored, new) = blocking(state, move |s| {
        let parts: Vec<(Part, &[u8])> = checked
            .parts
            .iter()
            .map(|(p, d)| (*p, d.as_slice()))
            .collect();
        s.put_bundle(&checked.product, &parts)
    })
    .await?;
    let view = product_view(&stored);
    Ok(if new {
        with_location(
            json_response(StatusCode::CREATED, &view),
            &product_url(&stored),
        )
    } else {
        json_response(StatusCode::OK, &view)
    })
}

/// `GET /products/{name}/{version}/bundle`: the version as a folder in a tar, under the
/// paths its last push used (or [`BundleFiles::default`]). 409 until every part is set.
pub(super) async fn pull(state: &AppState, name: Name, version: Name) -> Result<Resp, ApiError> {
    let product = get_product(state, &name, &version).await?;
    if let Some(missing) = Part::ALL.into_iter().find(|p| !product.parts.has(*p)) {
        return Err(ApiError::Conflict {
            message: format!(
                "product {name}/{version} has no {}; a bundle holds all three parts",
                missing.as_str()
            ),
            details: None,
        });
    }
    let (n, v) = (name.clone(), version.clone());
    let parts = blocking(state, move |s| {
        Part::ALL
            .into_iter()
            .map(|p| s.part(&n, &v, p).map(|d| (p, d.unwrap_or_default())))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let layout = product.files.clone().unwrap_or_default();
    let manifest = Manifest {
        name: name.to_string(),
        version: version.to_string(),
        description: product.description.clone(),
        logo_url: product.logo_url.clone(),
        template: Some(layout.template.clone()),
        options: Some(layout.options.clone()),
        orchestrator: Some(layout.orchestrator.clone()),
    };
    let mut manifest =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ApiError::Internal(Box::new(e)))?;
    manifest.push(b'\n');
    let mut files: Vec<(&str, &[u8])> = vec![(MANIFEST, &manifest)];
    files.extend(parts.iter().map(|(p, d)| (layout.of(*p), d.as_slice())));
    // invariant: the stored layout passed `check_manifest`, so every path is writable.
    let tar = tar::write(&files).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let mut resp = raw_response(tar, TAR);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}-{version}.tar\""))
    {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    const OPTIONS: &str =
        r#"{"required": {"size": 1}, "optional": {}, "advanced": {}, "descriptions": {}}"#;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(p, d)| ((*p).to_owned(), d.as_bytes().to_vec()))
            .collect()
    }

    fn run(list: &[(&str, &str)]) -> Result<Checked, Problems> {
        let now = Timestamp("2026-12-02T00:00:00.000Z".into());
        check(&n("p"), &n("1"), files(list), &now, |_, t, _| {
            if t.contains("fails") {
                Err("does not render".into())
            } else {
                Ok(())
            }
        })
    }

    #[test]
    fn a_good_bundle_is_every_part_with_its_layout() {
        let c = run(&[
            (
                "product.json",
                r#"{"name": "p", "version": "1", "template": "t.json"}"#,
            ),
            ("t.json", "{{opts.size}}"),
            ("options.json", OPTIONS),
            ("orchestrate.py", "print()"),
        ])
        .unwrap();
        assert_eq!(
            c.parts.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            Part::ALL
        );
        let layout = c.product.files.unwrap();
        assert_eq!(layout.template, "t.json");
        assert_eq!(layout.orchestrator, "orchestrate.py");
    }

    #[test]
    fn every_bad_file_is_named_at_once() {
        let problems = run(&[
            ("product.json", r#"{"name": "p", "version": "1"}"#),
            ("template.json", "{{#if}}"),
            ("options.json", r#"{"required": 3}"#),
            ("stray.txt", ""),
        ])
        .unwrap_err();
        assert_eq!(
            problems.keys().collect::<Vec<_>>(),
            [
                "options.json",
                "orchestrate.py",
                "stray.txt",
                "template.json"
            ]
        );
        assert!(problems["orchestrate.py"].starts_with("missing"));
        // A template that compiles but does not render with the options is its own error.
        let problems = run(&[
            ("product.json", r#"{"name": "p", "version": "1"}"#),
            ("template.json", "fails"),
            ("options.json", OPTIONS),
            ("orchestrate.py", ""),
        ])
        .unwrap_err();
        assert_eq!(problems["template.json"], "does not render");
        assert_eq!(problems["orchestrate.py"], "the script is empty");
    }

    #[test]
    fn the_manifest_is_checked_first() {
        let only = |m: &str| run(&[("product.json", m)]).unwrap_err();
        // A manifest for another product is reported with the other files' problems.
        let other = only(r#"{"name": "q", "version": "1"}"#);
        assert!(other["product.json"].contains("pushed to p/1"));
        assert!(other["template.json"].starts_with("missing"));
        assert!(
            only(r#"{"name": "p", "version": "1", "colour": 1}"#)["product.json"]
                .contains("colour")
        );
        assert!(
            only(r#"{"name": "p", "version": "1", "template": "../x"}"#)["product.json"]
                .contains("..")
        );
        assert!(run(&[]).unwrap_err()["product.json"].starts_with("missing"));
    }
}
