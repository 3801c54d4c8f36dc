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
}
