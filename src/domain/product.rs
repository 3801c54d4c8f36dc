//! Products: a name and version, a description, and the three uploaded parts.

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::ids::Name;

/// The uploadable parts of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The handlebars cluster template (renders to the JSON cluster spec).
    Template,
    /// The options document.
    Options,
    /// The orchestration script, stored as raw bytes.
    Orchestrator,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Template, Part::Options, Part::Orchestrator];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Template => "template",
            Part::Options => "options",
            Part::Orchestrator => "orchestrator",
        }
    }
}

/// Which parts have been uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    pub template: bool,
    pub options: bool,
    pub orchestrator: bool,
}

impl Parts {
    pub fn set(&mut self, part: Part) {
        *self.flag(part) = true;
    }

    pub fn has(&self, part: Part) -> bool {
        match part {
            Part::Template => self.template,
            Part::Options => self.options,
            Part::Orchestrator => self.orchestrator,
        }
    }

    fn flag(&mut self, part: Part) -> &mut bool {
        match part {
            Part::Template => &mut self.template,
            Part::Options => &mut self.options,
            Part::Orchestrator => &mut self.orchestrator,
        }
    }
}

/// A registered product version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub name: Name,
    pub version: Name,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub parts: Parts,
    /// Where a bundle keeps each part (`product.json` names them), as the last bundle push
    /// gave them; `None` for a product registered part by part, whose bundle uses
    /// [`BundleFiles::default`]. Kept so that a pulled bundle has the folder's own names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BundleFiles>,
}

impl Product {
    /// A product with no parts yet, no description and no logo, made at `at`.
    pub fn new(name: Name, version: Name, at: Timestamp) -> Self {
        Self {
            name,
            version,
            description: String::new(),
            logo_url: None,
            created_at: at.clone(),
            updated_at: at,
            parts: Parts::default(),
            files: None,
        }
    }
}

/// The paths of a bundle's three parts inside the bundle folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFiles {
    pub template: String,
    pub options: String,
    pub orchestrator: String,
}

impl Default for BundleFiles {
    /// The names the Slurm and Spark examples use; `product.json` may name others.
    fn default() -> Self {
        Self {
            template: "template.json".into(),
            options: "options.json".into(),
            orchestrator: "orchestrate.py".into(),
        }
    }
}

impl BundleFiles {
    /// The path of `part`.
    pub fn of(&self, part: Part) -> &str {
        match part {
            Part::Template => &self.template,
            Part::Options => &self.options,
            Part::Orchestrator => &self.orchestrator,
        }
    }
}
