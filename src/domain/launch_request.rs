//! A launch request turned into a cluster record: resolve the user's options against the
//! product's options document, render the product's template with them, parse the rendered
//! spec, and record the new cluster with its NodeAgent secret.
//!
//! Pure: the caller loads the product's parts, and passes in the new cluster's id, its
//! secret and the clock, so every step is table-testable. Storing the record and waking the
//! scheduler are the caller's. (Not to be confused with [`super::launch`], the payload that
//! one node's task carries to its executor.)

use serde_json::{Map, Value, json};

use super::Timestamp;
use super::cluster::{Cluster, ClusterSpec, SpecError};
use super::ids::ClusterId;
use super::options::{OptionsDoc, OptionsError};
use super::product::Product;
use super::template::{Renderer, TemplateError};

/// What a launch asks for, and the product parts it is launched from.
#[derive(Debug, Clone, Copy)]
pub struct LaunchRequest<'a> {
    pub product: &'a Product,
    /// The product's handlebars template (spec phase).
    pub template: &'a str,
    /// The product's options document; the default document when none was uploaded.
    pub options: &'a OptionsDoc,
    /// The user's option values; every key not given takes its default.
    pub user_options: &'a Map<String, Value>,
    /// Who launches: the new cluster's owner, offered to templates as `{{user}}`.
    pub owner: &'a str,
    /// The default node image, offered to templates as `{{node_image}}`.
    pub node_image: &'a str,
}

/// The parts of a new cluster that the caller chooses: they are random or read a clock.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub id: ClusterId,
    /// The shared secret of the cluster's NodeAgent ports. Must be unguessable.
    pub secret: String,
    pub now: Timestamp,
}

/// Why a template did not render to a valid cluster spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("the template cannot be rendered")]
    Template(#[source] TemplateError),
    #[error("the template rendered an invalid cluster")]
    Spec(#[source] SpecError),
}

/// Why a launch request cannot become a cluster.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LaunchError {
    /// The user's options do not fit the options document (every bad key is listed).
    #[error("invalid options")]
    Options(#[source] OptionsError),
    /// The options fit, but the template fails with them.
    #[error("the template failed with these options")]
    Render(#[source] RenderError),
}

impl LaunchRequest<'_> {
    /// The new cluster: `registered`, every node `queued`, with the resolved options.
    ///
    /// # Errors
    /// [`LaunchError::Options`] when the options do not fit the document,
    /// [`LaunchError::Render`] when the template fails with them or renders no valid spec.
    pub fn cluster(&self, renderer: &Renderer, fresh: Fresh) -> Result<Cluster, LaunchError> {
        let options = self
            .options
            .resolve(self.user_options)
            .map_err(LaunchError::Options)?;
        let ctx = spec_context(
            &options,
            fresh.id,
            self.owner,
            self.product,
            self.node_image,
        );
        let spec = render_spec(renderer, self.template, &ctx).map_err(LaunchError::Render)?;
        Ok(Cluster::new(
            fresh.id,
            self.owner.to_owned(),
            self.product.name.clone(),
            self.product.version.clone(),
            options,
            spec,
            fresh.secret,
            fresh.now,
        ))
    }
}

/// Renders `template` with the defaults (and required examples) of `options`, as a launch
/// with no user options would, and validates the spec: the check run when a template or an
/// options document is uploaded.
///
/// # Errors
/// [`RenderError`] when the pair does not render to a valid spec.
pub fn check_template(
    renderer: &Renderer,
    product: &Product,
    template: &str,
    options: &OptionsDoc,
    node_image: &str,
) -> Result<ClusterSpec, RenderError> {
    let ctx = spec_context(
        &options.defaults_with_examples(),
        ClusterId(uuid::Uuid::nil()),
        "validation",
        product,
        node_image,
    );
    render_spec(renderer, template, &ctx)
}

/// What a spec-phase template sees: `opts`, `cluster_id`, `user`, `product`, `version` and
/// `node_image`.
pub(crate) fn spec_context(
    opts: &Map<String, Value>,
    id: ClusterId,
    user: &str,
    product: &Product,
    node_image: &str,
) -> Value {
    json!({"opts": opts, "cluster_id": id.to_string(), "user": user, "product": product.name, "version": product.version, "node_image": node_image})
}

pub(crate) fn render_spec(
    renderer: &Renderer,
    template: &str,
    ctx: &Value,
) -> Result<ClusterSpec, RenderError> {
    let rendered = renderer
        .render(template, ctx)
        .map_err(RenderError::Template)?;
    ClusterSpec::parse(&rendered).map_err(RenderError::Spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClusterStatus, Desired, Name, NodeStatus};

    const TEMPLATE: &str = r#"{"nodes": {
        {{#each (range 0 opts.size)}}"n{{this}}": {"docker_image": "{{../node_image}}", "cpu": {{../opts.cpu}}, "mem": 64, "services": ["s"], "tags": ["{{../user}}", "{{../product}}-{{../version}}", "{{../cluster_id}}"]}{{#unless @last}},{{/unless}}{{/each}}
    }, "services": {"s": {}}}"#;

    fn product() -> Product {
        let now = Timestamp("2026-12-01T00:00:00.000Z".into());
        Product {
            name: Name::parse("reference").unwrap(),
            version: Name::parse("1.0.0").unwrap(),
            description: String::new(),
            logo_url: None,
            created_at: now.clone(),
            updated_at: now,
            parts: Default::default(),
        }
    }

    fn doc() -> OptionsDoc {
        OptionsDoc::from_value(json!({"required": {"size": 1}, "optional": {"cpu": 0.5}})).unwrap()
    }

    fn fresh() -> Fresh {
        Fresh {
            id: ClusterId(uuid::Uuid::from_u128(7)),
            secret: "s3cret".into(),
            now: Timestamp("2026-12-01T12:00:00.000Z".into()),
        }
    }

    fn launch(template: &str, user: Value) -> Result<Cluster, LaunchError> {
        let (product, doc) = (product(), doc());
        let Value::Object(user_options) = user else {
            panic!("options are an object")
        };
        LaunchRequest {
            product: &product,
            template,
            options: &doc,
            user_options: &user_options,
            owner: "alice",
            node_image: "img:1",
        }
        .cluster(&Renderer::spec(), fresh())
    }

    #[test]
    fn a_launch_resolves_renders_and_records_the_cluster() {
        let c = launch(TEMPLATE, json!({"size": "2"})).unwrap();
        let f = fresh();
        assert_eq!((c.id, c.secret.as_str()), (f.id, "s3cret"));
        assert_eq!(c.owner, "alice");
        assert_eq!(
            (c.product.as_str(), c.version.as_str()),
            ("reference", "1.0.0")
        );
        assert_eq!(
            c.options,
            *json!({"size": 2, "cpu": 0.5}).as_object().unwrap()
        );
        assert_eq!(c.status, ClusterStatus::Registered);
        assert_eq!(c.desired, Desired::Running);
        assert_eq!((&c.created_at, c.history.len()), (&f.now, 1));
        let names: Vec<_> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n0", "n1"]);
        let n = &c.nodes[0];
        assert_eq!((n.docker_image.as_str(), n.cpu), ("img:1", 0.5));
        assert_eq!(n.status, NodeStatus::Queued);
        assert_eq!(
            n.tags,
            ["alice", "reference-1.0.0", &f.id.to_string()],
            "the template sees user, product, version and cluster id"
        );
    }

    #[test]
    fn what_goes_wrong_is_told_apart() {
        let kind = |e: &LaunchError| match e {
            LaunchError::Options(o) => format!("options {:?} {:?}", o.missing, o.unknown),
            LaunchError::Render(RenderError::Template(_)) => "template".into(),
            LaunchError::Render(RenderError::Spec(_)) => "spec".into(),
        };
        let cases = [
            (TEMPLATE, json!({}), r#"options ["size"] []"#),
            (
                TEMPLATE,
                json!({"size": 1, "colour": "red"}),
                r#"options [] ["colour"]"#,
            ),
            (
                r#"{"nodes": {{opts.nope}}}"#,
                json!({"size": 1}),
                "template",
            ),
            (
                r#"{"nodes": {}, "services": {}}"#,
                json!({"size": 1}),
                "spec",
            ),
        ];
        for (template, user, want) in cases {
            let e = launch(template, user.clone()).unwrap_err();
            assert_eq!(kind(&e), want, "{template} {user}");
        }
    }

    #[test]
    fn an_upload_is_checked_with_defaults_and_examples() {
        let (p, r) = (product(), Renderer::spec());
        let spec = check_template(&r, &p, TEMPLATE, &doc(), "img:1").unwrap();
        assert_eq!(spec.nodes.len(), 1, "the example of the required size");
        assert!(matches!(
            check_template(&r, &p, "{{opts.nope}}", &doc(), "img:1"),
            Err(RenderError::Template(_))
        ));
        assert!(matches!(
            check_template(&r, &p, "[]", &doc(), "img:1"),
            Err(RenderError::Spec(_))
        ));
    }
}
