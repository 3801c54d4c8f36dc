//! Handlebars rendering of product templates, in two phases.
//!
//! - **Spec phase** (launch, and upload with defaults): the template renders to the JSON
//!   cluster spec. Interpolated values are JSON-string-escaped, so an option value with a
//!   quote cannot break out of its string and inject nodes.
//! - **File phase** (configure time): a service's `files` are rendered again, as plain text,
//!   with the cluster facts (hosts, ports, peers).
//!
//! Both run in strict mode: an undefined variable is an error, never an empty string.
//!
//! Helpers: `range a b` (the integers a..b), `add`, `sub`, `mul`, `json` (a value as JSON
//! text; use `{{{json x}}}`), `join list sep` and `hostports list port-name` (`host:port,…`
//! for a list of nodes). `eq`, `ne`, `lt`, `gt`, `and`, `or`, `not` are built in, as are
//! `@first`/`@last`/`@index` inside `#each`.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson, handlebars_helper,
};
use serde_json::Value;

/// The largest `range` a template may ask for. It bounds what one user's options can make a
/// template do (a `size` of a billion must be an error, not an out-of-memory).
pub const MAX_RANGE: i64 = 10_000;

/// The largest rendered output accepted, in bytes.
pub const MAX_RENDERED: usize = 16 << 20;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template text is not valid handlebars, or rendering failed (undefined variable,
    /// bad helper argument). The message carries the line and column.
    #[error("template error: {0}")]
    Render(String),
    #[error("rendered output is larger than {MAX_RENDERED} bytes")]
    TooLarge,
}

impl From<RenderError> for TemplateError {
    fn from(e: RenderError) -> Self {
        let mut msg = match e.reason() {
            RenderErrorReason::MissingVariable(Some(path)) => {
                format!("undefined variable `{path}`")
            }
            RenderErrorReason::MissingVariable(None) => "undefined variable".to_owned(),
            other => other.to_string(),
        };
        if let (Some(line), Some(col)) = (e.line_no, e.column_no) {
            msg = format!("{msg} (line {line}, column {col})");
        }
        TemplateError::Render(msg)
    }
}

impl From<handlebars::TemplateError> for TemplateError {
    fn from(e: handlebars::TemplateError) -> Self {
        TemplateError::Render(e.to_string().trim().replace('\n', " "))
    }
}

/// A configured handlebars registry for one phase.
pub struct Renderer {
    hbs: Handlebars<'static>,
}

impl Renderer {
    /// The spec-phase renderer: output must be JSON, so interpolations are JSON-escaped.
    pub fn spec() -> Self {
        let mut r = Self::base();
        r.hbs.register_escape_fn(json_string_escape);
        r
    }

    /// The file-phase renderer: plain text, nothing escaped.
    pub fn files() -> Self {
        let mut r = Self::base();
        r.hbs.register_escape_fn(handlebars::no_escape);
        r
    }

    fn base() -> Self {
        let mut hbs = Handlebars::new();
        hbs.set_strict_mode(true);
        hbs.register_helper("range", Box::new(RangeHelper));
        hbs.register_helper("add", Box::new(add));
        hbs.register_helper("sub", Box::new(sub));
        hbs.register_helper("mul", Box::new(mul));
        hbs.register_helper("json", Box::new(json));
        hbs.register_helper("join", Box::new(join));
        hbs.register_helper("hostports", Box::new(hostports));
        Self { hbs }
    }

    /// Renders `template` with `ctx`.
    ///
    /// # Errors
    /// [`TemplateError`] on a syntax error, an undefined variable, a bad helper call or an
    /// oversized result.
    pub fn render(&self, template: &str, ctx: &Value) -> Result<String, TemplateError> {
        let out = self.hbs.render_template(template, ctx)?;
        if out.len() > MAX_RENDERED {
            return Err(TemplateError::TooLarge);
        }
        Ok(out)
    }
}

fn json_string_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1).max(1)].to_owned()
}

handlebars_helper!(add: |a: Value, b: Value| arith(&a, &b, |x, y| x.checked_add(y), |x, y| x + y));
handlebars_helper!(sub: |a: Value, b: Value| arith(&a, &b, |x, y| x.checked_sub(y), |x, y| x - y));
handlebars_helper!(mul: |a: Value, b: Value| arith(&a, &b, |x, y| x.checked_mul(y), |x, y| x * y));
handlebars_helper!(json: |v: Value| serde_json::to_string(&v).unwrap_or_default());
handlebars_helper!(join: |list: array, sep: str| list
    .iter()
    .map(|v| match v { Value::String(s) => s.clone(), other => other.to_string() })
    .collect::<Vec<_>>()
    .join(sep));
// `{{hostports services.workers.nodes "http"}}` where each node is an object with `address`
// (or `host`) and `ports`: gives `10.0.0.1:31000,10.0.0.2:31002`.
handlebars_helper!(hostports: |list: array, port: str| list
    .iter()
    .filter_map(|n| {
        let host = n.get("address").or_else(|| n.get("host"))?.as_str()?;
        let p = n.get("ports")?.get(port)?;
        Some(format!("{host}:{p}"))
    })
    .collect::<Vec<_>>()
    .join(","));

fn arith(
    a: &Value,
    b: &Value,
    int: fn(i64, i64) -> Option<i64>,
    float: fn(f64, f64) -> f64,
) -> Value {
    let num = |v: &Value| match v {
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .map(|f| (s.trim().parse::<i64>().ok(), f)),
        other => other.as_f64().map(|f| (other.as_i64(), f)),
    };
    match (num(a), num(b)) {
        (Some((Some(x), _)), Some((Some(y), _))) => {
            int(x, y).map(Value::from).unwrap_or(Value::Null)
        }
        (Some((_, x)), Some((_, y))) => serde_json::Number::from_f64(float(x, y))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// `range start end` → `[start, …, end-1]`, refusing more than [`MAX_RANGE`] elements.
struct RangeHelper;

impl HelperDef for RangeHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let int = |i: usize| -> Result<i64, RenderError> {
            let p = h
                .param(i)
                .ok_or(RenderErrorReason::ParamNotFoundForIndex("range", i))?;
            let v = p.value();
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| {
                    RenderErrorReason::Other(format!(
                        "range: argument {} is not an integer: {v}",
                        i + 1
                    ))
                    .into()
                })
        };
        let (start, end) = (int(0)?, int(1)?);
        if end.saturating_sub(start) > MAX_RANGE {
            return Err(RenderErrorReason::Other(format!(
                "range {start} {end} has more than {MAX_RANGE} elements"
            ))
            .into());
        }
        Ok(ScopedJson::Derived(Value::from(
            (start..end.max(start)).collect::<Vec<i64>>(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loops_with_separators() {
        let t =
            r#"[{{#each (range 0 opts.size)}}{{#unless @first}},{{/unless}}"n{{this}}"{{/each}}]"#;
        let out = Renderer::spec()
            .render(t, &json!({"opts": {"size": 3}}))
            .unwrap();
        assert_eq!(out, r#"["n0","n1","n2"]"#);
    }

    #[test]
    fn arithmetic_helpers() {
        let out = Renderer::spec()
            .render(
                "{{add 1 2}} {{sub 5 opts.n}} {{mul 2 1.5}} {{add \"2\" 3}}",
                &json!({"opts": {"n": 1}}),
            )
            .unwrap();
        assert_eq!(out, "3 4 3.0 5");
    }

    #[test]
    fn strict_mode_refuses_undefined_variables() {
        let err = Renderer::spec()
            .render("{\"a\": {{opts.nope}}}", &json!({"opts": {}}))
            .unwrap_err();
        assert!(
            matches!(&err, TemplateError::Render(m) if m.contains("opts.nope")),
            "{err}"
        );
        assert!(
            Renderer::files()
                .render("{{cluster_id}}", &json!({}))
                .is_err()
        );
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let err = Renderer::spec()
            .render("line1\n{{#each x}}", &json!({"x": []}))
            .unwrap_err();
        let TemplateError::Render(m) = err else {
            panic!()
        };
        assert!(m.contains("line"), "{m}");
    }

    #[test]
    fn spec_phase_escapes_into_json_strings() {
        let v = json!({"opts": {"name": "a\",\"evil\":\"1"}});
        let out = Renderer::spec()
            .render(r#"{"name": "{{opts.name}}"}"#, &v)
            .unwrap();
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, json!({"name": "a\",\"evil\":\"1"}));
        let plain = Renderer::files().render("{{opts.name}}", &v).unwrap();
        assert_eq!(plain, "a\",\"evil\":\"1");
    }

    #[test]
    fn range_is_bounded() {
        let err = Renderer::spec().render(
            "{{#each (range 0 opts.size)}}x{{/each}}",
            &json!({"opts": {"size": 1_000_000}}),
        );
        assert!(err.is_err());
    }

    #[test]
    fn json_join_and_hostports() {
        let ctx = json!({
            "list": ["a", "b"],
            "nodes": [
                {"name": "w0", "address": "127.0.0.1", "ports": {"http": 31000}},
                {"name": "w1", "address": "127.0.0.1", "ports": {"http": 31001}}
            ]
        });
        let r = Renderer::files();
        assert_eq!(r.render("{{{json list}}}", &ctx).unwrap(), r#"["a","b"]"#);
        assert_eq!(r.render("{{join list \",\"}}", &ctx).unwrap(), "a,b");
        assert_eq!(
            r.render("{{hostports nodes \"http\"}}", &ctx).unwrap(),
            "127.0.0.1:31000,127.0.0.1:31001"
        );
    }
}
