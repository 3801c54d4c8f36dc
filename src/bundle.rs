//! The product bundle format, shared by the server (`PUT`/`GET …/bundle`, [`crate::api`])
//! and the CLI (`paas products push|pull`): a product folder as one ustar archive
//! ([`tar`]) holding `product.json` ([`Manifest`]) and the three files it names. Pure: no
//! I/O, no HTTP; what makes a bundle *valid* (a template that renders, an options document)
//! is the server's to check.

pub mod tar;

use serde::{Deserialize, Serialize};

use crate::domain::BundleFiles;

/// The manifest's path in every bundle.
pub const MANIFEST: &str = "product.json";

/// The media type of a bundle, both ways.
pub const TAR: &str = "application/x-tar";

/// `product.json`: the product version and where its three parts are in the folder. The
/// paths default to [`BundleFiles::default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<String>,
}

impl Manifest {
    /// Parses `product.json`.
    ///
    /// # Errors
    /// The reason, for the person who wrote the file: bad JSON, an unknown or mistyped key.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Where the three parts are.
    pub fn files(&self) -> BundleFiles {
        let d = BundleFiles::default();
        BundleFiles {
            template: self.template.clone().unwrap_or(d.template),
            options: self.options.clone().unwrap_or(d.options),
            orchestrator: self.orchestrator.clone().unwrap_or(d.orchestrator),
        }
    }

    /// Every file the bundle holds, the manifest first.
    pub fn paths(&self) -> Vec<String> {
        let f = self.files();
        vec![MANIFEST.into(), f.template, f.options, f.orchestrator]
    }
}
