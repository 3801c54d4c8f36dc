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
//! Inline partials (`{{#*inline "p"}}…{{/inline}}`, `{{> p}}`) must have literal names and
//! must not include themselves, directly or through each other: handlebars has no depth
//! limit, and a recursive partial overflows the stack, which aborts the whole process (not a
//! panic that could be caught). [`Renderer::render`] checks this before rendering.
//!
//! **A value is never evaluated as a template.** The spec phase's output is itself template
//! text for the file phase, so a value that reaches it (an option `{{cluster_id}}`) would be
//! evaluated there. [`shield`] therefore maps `{` and `\` in every string of the spec-phase
//! context to private-use characters ([`SHIELDED_BRACE`], [`SHIELDED_BACKSLASH`]): the file
//! phase sees no `{{` that came from a value, and [`unshield`] turns them back, in the spec's
//! plain fields right after the spec phase and in the file phase's output.
//!
//! Templates are compiled once: [`Renderer`] keeps the last compiled templates, keyed by
//! their text (at most [`CACHED_TEMPLATES`] of them, [`CACHED_BYTES`] of text in all), so a
//! launch of a product whose template was rendered before parses nothing. Keyed by the text
//! itself, an entry can never be stale: a product whose template changes renders the new
//! text, which is looked up (and compiled) as a new key; the old one ages out.
//!
//! A launch renders its product's template with a new cluster id each time, and nothing
//! else new when the same options are asked again. [`Renderer::render_with_id`] keeps the
//! text rendered with a placeholder id, by template and context, and swaps the launch's id
//! into it: only where the template can do nothing with the id but print it (see
//! [`IdMemo`]), so that the text is byte for byte the one a render would give.
//!
//! Rendering writes into a bounded buffer: output beyond [`MAX_RENDERED`] stops the render
//! there (an `{{#each}}` blow-up cannot allocate more than the limit). Partial blocks
//! (`{{#> p}}…{{/p}}`) are refused, because handlebars renders their body into an unbounded
//! buffer of its own.
//!
//! File-phase escaping helpers, for values that reach a config file or a script:
//! `{{word x}}` (a single token: only `[A-Za-z0-9._:/@%+=,-]`, else an error; for `key=value`
//! files such as `slurm.conf` and `spark-defaults.conf`) and `{{quote x}}` (a POSIX shell word,
//! single-quoted when needed). Both refuse control characters, so a value never adds a line.
//!
//! Helpers: `range a b` (the integers a..b), `add`, `sub`, `mul`, `json` (a value as JSON
//! text; use `{{{json x}}}`), `join list sep` and `hostports list port-name` (`host:port,…`
//! for a list of nodes). `eq`, `ne`, `lt`, `gt`, `and`, `or`, `not` are built in, as are
//! `@first`/`@last`/`@index` inside `#each`.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    Renderable, ScopedJson, Template, WriteOutput, handlebars_helper,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// The largest `range` a template may ask for. It bounds what one user's options can make a
/// template do (a `size` of a billion must be an error, not an out-of-memory).
pub const MAX_RANGE: i64 = 10_000;

/// The largest rendered output accepted, in bytes. Enforced while rendering.
pub const MAX_RENDERED: usize = 16 << 20;

/// The most compiled templates one [`Renderer`] keeps.
pub const CACHED_TEMPLATES: usize = 64;

/// The most template text (bytes) one [`Renderer`] keeps compiled; a template longer than an
/// eighth of it is compiled for each render and never kept.
pub const CACHED_BYTES: usize = 4 << 20;

/// What a `{` of a value becomes between the two phases (a private-use character).
pub const SHIELDED_BRACE: char = '\u{E000}';
/// What a `\` of a value becomes between the two phases.
pub const SHIELDED_BACKSLASH: char = '\u{E001}';

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

/// A configured handlebars registry for one phase, and the templates it compiled last.
pub struct Renderer {
    hbs: Handlebars<'static>,
    compiled: Compiled,
    ids: IdMemo,
}

impl Renderer {
    /// The spec-phase renderer: output must be JSON, so interpolations are JSON-escaped.
    pub fn spec() -> Self {
        let mut r = Self::base();
        r.hbs.register_escape_fn(json_string_escape);
        r
    }

    /// The file-phase renderer: plain text, nothing escaped; `quote` and `word` escape what
    /// a file needs.
    pub fn files() -> Self {
        let mut r = Self::base();
        r.hbs.register_escape_fn(handlebars::no_escape);
        r.hbs.register_helper("quote", Box::new(Quote::Shell));
        r.hbs.register_helper("word", Box::new(Quote::Word));
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
        Self {
            hbs,
            compiled: Compiled::default(),
            ids: IdMemo::default(),
        }
    }

    /// Renders `template` with `ctx`, stopping as soon as the output passes [`MAX_RENDERED`].
    ///
    /// # Errors
    /// [`TemplateError`] on a syntax error, an undefined variable, a bad helper call, a
    /// partial block or an oversized result.
    pub fn render(&self, template: &str, ctx: &Value) -> Result<String, TemplateError> {
        self.render_value(template, ctx.clone())
    }

    /// [`Renderer::render`] with a context it may keep (no copy of it is made).
    ///
    /// # Errors
    /// As [`Renderer::render`].
    pub fn render_value(&self, template: &str, ctx: Value) -> Result<String, TemplateError> {
        let tpl = self.compile(template)?;
        let ctx = Context::from(ctx);
        // Sized for the usual output (the template's length, or a few times that for loops):
        // a few doublings instead of a dozen from empty.
        let mut out = Bounded {
            buf: Vec::with_capacity(template.len().min(MAX_RENDERED)),
            overflowed: false,
        };
        let mut rc = RenderContext::new(None);
        match tpl.render(&self.hbs, &ctx, &mut rc, &mut WriteOutput::new(&mut out)) {
            Ok(()) => {}
            Err(_) if out.overflowed => return Err(TemplateError::TooLarge),
            Err(e) => return Err(e.into()),
        }
        String::from_utf8(out.buf)
            .map_err(|_| TemplateError::Render("rendered output is not UTF-8".into()))
    }

    /// [`Renderer::render_value`] for a context whose `"cluster_id"` is a cluster id, through
    /// the memo of texts rendered with a placeholder id (see [`IdMemo`]): a launch whose
    /// template and context (but for the id) were rendered before only swaps its id into the
    /// kept text. The text is the same as `render_value`'s, byte for byte.
    ///
    /// # Errors
    /// As [`Renderer::render`].
    pub fn render_with_id(&self, template: &str, mut ctx: Value) -> Result<String, TemplateError> {
        let id = match ctx.get(ID_KEY).and_then(Value::as_str) {
            Some(id) if is_id_text(id) => id.to_owned(),
            _ => return self.render_value(template, ctx),
        };
        // The key: the context with the placeholder in the id's place (same order).
        ctx[ID_KEY] = Value::from(ID_LOW);
        match self.ids.get(template, &ctx) {
            Some(Some(text)) => return Ok(text.replace(ID_LOW, &id)),
            Some(None) => {
                ctx[ID_KEY] = Value::from(id);
                return self.render_value(template, ctx);
            }
            None => {}
        }
        let key = ctx.clone();
        ctx[ID_KEY] = Value::from(id.as_str());
        let text = self.render_value(template, ctx.clone())?;
        // Kept only if the template hands the id (or a context holding it) to no helper,
        // block or partial, so that it can only be printed as it is; and if both
        // placeholders, swapped for the id, give exactly this text (no placeholder text is
        // printed from elsewhere).
        let mut verbatim = None;
        if self.compile(template).is_ok_and(|t| prints_id_only(&t)) {
            let mut render_as = |placeholder: &str| {
                ctx[ID_KEY] = Value::from(placeholder);
                self.render_value(template, ctx.clone())
                    .ok()
                    .filter(|t| t.replace(placeholder, &id) == text)
            };
            if let (Some(low), Some(_)) = (render_as(ID_LOW), render_as(ID_HIGH)) {
                verbatim = Some(low);
            }
        }
        self.ids.put(template, key, verbatim);
        Ok(text)
    }

    /// `template` compiled and checked (no partial block, no recursive partial): from the
    /// cache, or compiled now and kept.
    fn compile(&self, template: &str) -> Result<Arc<Template>, TemplateError> {
        if let Some(tpl) = self.compiled.get(template) {
            return Ok(tpl);
        }
        if has_partial_block(template) {
            return Err(TemplateError::Render(
                "partial blocks ({{#> name}}…{{/name}}) are not supported; use {{> name}}".into(),
            ));
        }
        // The options of `Handlebars::render_template`: no name, indentation as parsed.
        let tpl = Template::compile(template)?;
        check_partials(&tpl)?;
        let tpl = Arc::new(tpl);
        self.compiled.put(template, Arc::clone(&tpl));
        Ok(tpl)
    }

    /// How many compiled templates are kept (for tests).
    #[cfg(test)]
    pub(crate) fn compiled_len(&self) -> usize {
        self.compiled.lock().map.len()
    }

    /// Whether `template` is kept compiled (for tests).
    #[cfg(test)]
    fn is_kept(&self, template: &str) -> bool {
        self.compiled.lock().map.contains_key(template)
    }
}

/// The templates a [`Renderer`] compiled last, by text; the least recently used goes first.
/// Only templates that compiled and passed the partial checks are kept.
#[derive(Default)]
struct Compiled {
    inner: Mutex<CompiledInner>,
}

#[derive(Default)]
struct CompiledInner {
    /// Text → the compiled template and when it was last used.
    map: HashMap<Box<str>, (Arc<Template>, u64), foldhash::fast::RandomState>,
    /// Sum of the kept texts' lengths.
    bytes: usize,
    /// Counts lookups: the "when" of [`CompiledInner::map`].
    clock: u64,
}

impl Compiled {
    fn lock(&self) -> std::sync::MutexGuard<'_, CompiledInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, text: &str) -> Option<Arc<Template>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let (tpl, used) = inner.map.get_mut(text)?;
        *used = now;
        Some(Arc::clone(tpl))
    }

    fn put(&self, text: &str, tpl: Arc<Template>) {
        if text.len() > CACHED_BYTES / 8 {
            return;
        }
        let mut inner = self.lock();
        if inner.map.contains_key(text) {
            return;
        }
        while !inner.map.is_empty()
            && (inner.map.len() >= CACHED_TEMPLATES || inner.bytes + text.len() > CACHED_BYTES)
        {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            inner.map.remove(&oldest);
            inner.bytes -= oldest.len();
        }
        inner.clock += 1;
        let now = inner.clock;
        inner.bytes += text.len();
        inner.map.insert(text.into(), (tpl, now));
    }
}

/// The context key [`Renderer::render_with_id`] takes the id from.
const ID_KEY: &str = "cluster_id";
/// The two placeholder ids: the least and the greatest cluster id text.
const ID_LOW: &str = "00000000-0000-0000-0000-000000000000";
const ID_HIGH: &str = "ffffffff-ffff-ffff-ffff-ffffffffffff";

/// Whether `s` is written as a cluster id is (a hyphenated lowercase UUID): no escaping
/// changes it, and it is as long as the placeholders.
fn is_id_text(s: &str) -> bool {
    s.len() == ID_LOW.len()
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// Whether `template` uses the cluster id only by printing it: no helper, block, partial or
/// decorator gets, as a parameter or hash value, a path through `cluster_id` or a path to a
/// whole context (`this`, `.`, `..`, `@root`: the root context holds the id), directly or in
/// a subexpression. Plain expressions (`{{cluster_id}}`, `{{../cluster_id}}`, `{{this}}`)
/// print what they name. Inline partials are checked where they are defined. An element
/// this walk does not know makes it answer no.
fn prints_id_only(template: &handlebars::Template) -> bool {
    use handlebars::template::{Parameter, TemplateElement as E};
    use handlebars::{Path, PathSeg};
    fn param(p: &Parameter) -> bool {
        match p {
            Parameter::Name(n) => n != ID_KEY && n != "this",
            Parameter::Path(Path::Relative((segs, _))) => {
                segs.iter().any(|s| matches!(s, PathSeg::Named(_)))
                    && !segs
                        .iter()
                        .any(|s| matches!(s, PathSeg::Named(n) if n == ID_KEY))
            }
            // What a block sets (`@index`, `@key`, `@first`, `@last`), never the id; not
            // `@root` or anything else.
            Parameter::Path(Path::Local((_, name, _))) => {
                matches!(name.as_str(), "index" | "key" | "first" | "last")
            }
            Parameter::Literal(_) => true,
            Parameter::Subexpression(e) => element(&e.element),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
    fn helper(h: &handlebars::template::HelperTemplate) -> bool {
        let called = h.block || !h.params.is_empty() || !h.hash.is_empty();
        (!called || (param(&h.name) && h.params.iter().chain(h.hash.values()).all(param)))
            && h.template.iter().chain(&h.inverse).all(walk)
    }
    fn element(e: &E) -> bool {
        match e {
            E::RawString(_) | E::Comment(_) => true,
            E::Expression(h) | E::HtmlExpression(h) | E::HelperBlock(h) => helper(h),
            E::DecoratorBlock(d) | E::DecoratorExpression(d) => {
                d.name.as_name() == Some("inline")
                    && d.params.iter().all(|p| matches!(p, Parameter::Literal(_)))
                    && d.template.iter().all(walk)
            }
            E::PartialExpression(d) | E::PartialBlock(d) => {
                param(&d.name)
                    && d.params.iter().chain(d.hash.values()).all(param)
                    && d.template.iter().all(walk)
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
    fn walk(t: &handlebars::Template) -> bool {
        t.elements.iter().all(element)
    }
    walk(template)
}

/// Texts that [`Renderer::render_with_id`] rendered with the placeholder id [`ID_LOW`], by
/// template and context (with the placeholder in the id's place); `None` where the id may do
/// more than appear in the output.
///
/// Why a kept text is right for every id. A text is kept only when:
/// - the template hands the id to nothing ([`prints_id_only`]): no helper, block, partial
///   or decorator gets it, or a context that holds it, as a parameter. So the id can only
///   be printed, and every escape leaves its hex digits and hyphens as they are. The
///   output is then the same text for every id, with the id printed in the same places.
///   (Comparing the renders of a few ids could not show this: `gt` and `lt` together
///   single out a band of ids that the ids tried may all miss.)
/// - the renders with [`ID_LOW`] and [`ID_HIGH`], each placeholder replaced by the launch's
///   id, equal the launch's own render: no placeholder's text is printed from elsewhere (an
///   option or a literal), where the swap would wrongly replace it.
#[derive(Default)]
struct IdMemo {
    inner: Mutex<IdMemoInner>,
}

/// One template's contexts by their [`value_hash`], each with its text (with the placeholder)
/// or `None`.
type ByContext = HashMap<u64, Vec<(Value, Option<Arc<str>>)>>;

#[derive(Default)]
struct IdMemoInner {
    /// Template text → the context's [`value_hash`] → contexts and their texts with the
    /// placeholder.
    map: HashMap<Box<str>, ByContext, foldhash::fast::RandomState>,
    /// Bytes of every template and text kept, counted for each entry, and contexts counted
    /// as their template's length.
    bytes: usize,
    hasher: foldhash::fast::RandomState,
}

/// The most bytes [`IdMemo`] keeps (see [`IdMemoInner::bytes`]); past that, it starts again
/// from empty. A text longer than an eighth of it is not kept.
const ID_MEMO_BYTES: usize = 8 << 20;

impl IdMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdMemoInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Some(entry)` if this template and context were rendered before.
    fn get(&self, template: &str, ctx: &Value) -> Option<Option<Arc<str>>> {
        let inner = self.lock();
        let hash = value_hash(&inner.hasher, ctx);
        let (_, text) = inner
            .map
            .get(template)?
            .get(&hash)?
            .iter()
            .find(|(c, _)| same_value(c, ctx))?;
        Some(text.clone())
    }

    fn put(&self, template: &str, ctx: Value, text: Option<String>) {
        let size = 2 * template.len() + text.as_ref().map_or(0, String::len);
        if size > ID_MEMO_BYTES / 8 {
            return;
        }
        let mut inner = self.lock();
        if inner.bytes + size > ID_MEMO_BYTES {
            inner.map.clear();
            inner.bytes = 0;
        }
        inner.bytes += size;
        let hash = value_hash(&inner.hasher, &ctx);
        let same = inner
            .map
            .entry(template.into())
            .or_default()
            .entry(hash)
            .or_default();
        if !same.iter().any(|(c, _)| same_value(c, &ctx)) {
            same.push((ctx, text.map(Arc::from)));
        }
    }
}

/// Whether `a` and `b` are equal with their object keys in the same order (`==` on values
/// ignores the order, which `{{#each}}` over an object follows).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, x), (ky, y))| kx == ky && same_value(x, y))
        }
        _ => a == b,
    }
}

/// A hash of `v` that equal values share (object keys in their order: the contexts hashed
/// are built in one order).
fn value_hash(state: &foldhash::fast::RandomState, v: &Value) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    fn feed(h: &mut impl Hasher, v: &Value) {
        match v {
            Value::Null => h.write_u8(0),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Number(n) => (2u8, n.as_u64(), n.as_i64(), n.as_f64().map(f64::to_bits)).hash(h),
            Value::String(s) => (3u8, s).hash(h),
            Value::Array(a) => {
                (4u8, a.len()).hash(h);
                a.iter().for_each(|x| feed(h, x));
            }
            Value::Object(o) => {
                (5u8, o.len()).hash(h);
                for (k, x) in o {
                    k.hash(h);
                    feed(h, x);
                }
            }
        }
    }
    let mut h = state.build_hasher();
    feed(&mut h, v);
    h.finish()
}

/// A buffer that refuses to grow past [`MAX_RENDERED`]: the write that would pass it fails,
/// which aborts the render.
#[derive(Default)]
struct Bounded {
    buf: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > MAX_RENDERED {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `template` opens a partial block (`{{#> name}}`, `{{~#> name}}`).
fn has_partial_block(template: &str) -> bool {
    template.match_indices("{{").any(|(i, _)| {
        template[i + 2..]
            .trim_start_matches(['{', '~'])
            .trim_start()
            .starts_with("#>")
    })
}

/// `ctx` with every `{` and `\` of its strings (and object keys) replaced by
/// [`SHIELDED_BRACE`] and [`SHIELDED_BACKSLASH`]: what the spec phase renders with, so that no
/// value can write `{{` into text that the file phase evaluates. A shielding character already
/// in a value becomes U+FFFD, so [`unshield`] gives back exactly the value's other characters.
///
/// Works in place: a string (or key) with none of those four characters, as most are, is
/// neither copied nor reallocated.
pub fn shield(mut ctx: Value) -> Value {
    fn needs(s: &str) -> bool {
        s.bytes().any(|b| b == b'{' || b == b'\\') || is_shielded(s)
    }
    fn text(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                '{' => SHIELDED_BRACE,
                '\\' => SHIELDED_BACKSLASH,
                SHIELDED_BRACE | SHIELDED_BACKSLASH => '\u{FFFD}',
                c => c,
            })
            .collect()
    }
    rewrite_strings(&mut ctx, needs, text);
    ctx
}

/// Replaces every string and object key of `v` for which `needs` holds by `rewrite` of it,
/// in place; the rest is neither copied nor moved (keys keep their order).
fn rewrite_strings(v: &mut Value, needs: fn(&str) -> bool, rewrite: fn(&str) -> String) {
    match v {
        Value::String(s) if needs(s) => *s = rewrite(s),
        Value::Array(a) => a
            .iter_mut()
            .for_each(|v| rewrite_strings(v, needs, rewrite)),
        Value::Object(m) => {
            if m.keys().any(|k| needs(k)) {
                let old = std::mem::take(m);
                *m = old
                    .into_iter()
                    .map(|(k, v)| if needs(&k) { (rewrite(&k), v) } else { (k, v) })
                    .collect();
            }
            m.values_mut()
                .for_each(|v| rewrite_strings(v, needs, rewrite));
        }
        _ => {}
    }
}

/// Undoes [`shield`] in a text: the shielding characters become `{` and `\` again.
pub fn unshield(s: &str) -> String {
    if !is_shielded(s) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| match c {
            SHIELDED_BRACE => '{',
            SHIELDED_BACKSLASH => '\\',
            c => c,
        })
        .collect()
}

/// Whether `s` holds a shielding character. Both are three bytes in UTF-8, the first of them
/// 0xEE: a byte search (`memchr`) clears most texts without decoding a character.
pub(crate) fn is_shielded(s: &str) -> bool {
    s.as_bytes().contains(&0xEE) && s.contains([SHIELDED_BRACE, SHIELDED_BACKSLASH])
}

/// Undoes [`shield`] in every string and object key of `v`. What holds no shielding
/// character is left as it is (not copied).
pub fn unshield_value(v: &mut Value) {
    rewrite_strings(v, is_shielded, unshield);
}

/// Refuses partials that could recurse: a dynamic partial or inline-partial name, or an
/// inline partial that includes itself, directly or through others. Conservative: a cycle
/// that data would end (a partial walking a tree) is refused too.
fn check_partials(template: &handlebars::Template) -> Result<(), TemplateError> {
    // Inline partial name → the partial names its bodies include.
    let mut includes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    collect_partials(template, None, &mut includes)?;
    // Depth-first search for a cycle; `path` is the chain of partials being expanded.
    fn visit(
        name: &str,
        includes: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Result<(), TemplateError> {
        if let Some(at) = path.iter().position(|p| p == name) {
            let mut cycle = path[at..].to_vec();
            cycle.push(name.to_owned());
            return Err(TemplateError::Render(format!(
                "partial {name:?} includes itself ({})",
                cycle.join(" → ")
            )));
        }
        if done.contains(name) {
            return Ok(());
        }
        path.push(name.to_owned());
        for next in includes.get(name).into_iter().flatten() {
            visit(next, includes, path, done)?;
        }
        path.pop();
        done.insert(name.to_owned());
        Ok(())
    }
    let mut done = BTreeSet::new();
    for name in includes.keys() {
        visit(name, &includes, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

/// Records, for the inline partial `within` (if any), every partial `template` includes, and
/// the same for every inline partial it defines.
fn collect_partials(
    template: &handlebars::Template,
    within: Option<&str>,
    includes: &mut BTreeMap<String, BTreeSet<String>>,
) -> Result<(), TemplateError> {
    use handlebars::template::{Parameter, TemplateElement as E};
    // The name a partial is looked up by, unless it is computed while rendering.
    let literal = |p: &Parameter| match p {
        Parameter::Name(_) | Parameter::Path(_) => p.as_name().map(str::to_owned),
        Parameter::Literal(Value::String(s)) => Some(s.clone()),
        Parameter::Literal(other) => Some(other.to_string()),
        // A subexpression, or a kind a later handlebars adds.
        _ => None,
    };
    for element in &template.elements {
        match element {
            E::HelperBlock(h) => {
                for t in h.template.iter().chain(&h.inverse) {
                    collect_partials(t, within, includes)?;
                }
            }
            E::DecoratorBlock(d) | E::DecoratorExpression(d)
                if d.name.as_name() == Some("inline") =>
            {
                let Some(Parameter::Literal(Value::String(name))) = d.params.first() else {
                    return Err(TemplateError::Render(
                        "an inline partial needs a literal string name".to_owned(),
                    ));
                };
                includes.entry(name.clone()).or_default();
                if let Some(body) = &d.template {
                    collect_partials(body, Some(name), includes)?;
                }
            }
            E::PartialExpression(d) | E::PartialBlock(d) => {
                let name = literal(&d.name).ok_or_else(|| {
                    TemplateError::Render("a partial name must be literal".to_owned())
                })?;
                if let Some(within) = within {
                    includes.entry(within.to_owned()).or_default().insert(name);
                }
                if let Some(body) = &d.template {
                    collect_partials(body, within, includes)?;
                }
            }
            E::DecoratorBlock(d) => {
                if let Some(body) = &d.template {
                    collect_partials(body, within, includes)?;
                }
            }
            E::RawString(_)
            | E::HtmlExpression(_)
            | E::Expression(_)
            | E::DecoratorExpression(_)
            | E::Comment(_) => {}
            // A kind a later handlebars adds might include partials: refuse it until this
            // walk knows it.
            _ => {
                return Err(TemplateError::Render(
                    "unsupported template element".to_owned(),
                ));
            }
        }
    }
    Ok(())
}

fn json_string_escape(s: &str) -> String {
    // What serde_json escapes: quotes, backslashes and control characters.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return s.to_owned();
    }
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

/// The file-phase escaping helpers (see the module documentation).
#[derive(Debug, Clone, Copy)]
enum Quote {
    /// `{{quote x}}`: a POSIX shell word; single-quoted unless every character is safe.
    Shell,
    /// `{{word x}}`: a single token of safe characters, taken as it is; anything else is an
    /// error.
    Word,
}

impl Quote {
    fn name(self) -> &'static str {
        match self {
            Quote::Shell => "quote",
            Quote::Word => "word",
        }
    }
}

/// Characters a value may hold and stay one token in a shell line or a `key=value` file.
fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:/@%+=,-".contains(c)
}

impl HelperDef for Quote {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let p = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(self.name(), 0))?;
        // Name the expression, never the value: the value may be a secret.
        let what = p.relative_path().map_or("its argument", String::as_str);
        let text = match p.value() {
            Value::String(s) => s.clone(),
            v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
            _ => {
                return Err(RenderErrorReason::Other(format!(
                    "{}: {what} is not a string, number or boolean",
                    self.name()
                ))
                .into());
            }
        };
        if text.chars().any(char::is_control) {
            return Err(RenderErrorReason::Other(format!(
                "{}: {what} has a control character (e.g. a newline)",
                self.name()
            ))
            .into());
        }
        let safe = !text.is_empty() && text.chars().all(is_safe_char);
        let out = match self {
            Quote::Word if safe => text,
            Quote::Word => {
                return Err(RenderErrorReason::Other(format!(
                    "word: {what} is empty or has a character outside [A-Za-z0-9._:/@%+=,-]"
                ))
                .into());
            }
            Quote::Shell if safe => text,
            Quote::Shell => format!("'{}'", text.replace('\'', r"'\''")),
        };
        Ok(ScopedJson::Derived(Value::String(out)))
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

    #[test]
    fn recursive_partials_are_refused_before_rendering() {
        // Each of these overflowed the stack (a process abort) before the check. (Recursion
        // through a partial block is refused as a partial block.)
        for t in [
            r#"{{#*inline "p"}}x{{> p}}{{/inline}}{{> p}}"#,
            r#"{{#*inline "a"}}{{> b}}{{/inline}}{{#*inline "b"}}{{#each x}}{{> a}}{{/each}}{{/inline}}{{> a}}"#,
            r#"{{#*inline "p"}}{{~> p~}}{{/inline}}{{> p}}"#,
        ] {
            let err = Renderer::files().render(t, &json!({"x": [1]})).unwrap_err();
            assert!(
                matches!(&err, TemplateError::Render(m) if m.contains("includes itself")),
                "{t}: {err}"
            );
        }
        for t in [r#"{{> (concat "p")}}"#, r#"{{#*inline name}}x{{/inline}}"#] {
            assert!(
                Renderer::files().render(t, &json!({"name": "p"})).is_err(),
                "{t}"
            );
        }
        // Partials that do not recurse still work, as the Slurm template uses them.
        let ok = r#"{{#*inline "a"}}[{{> b}}]{{/inline}}{{#*inline "b"}}{{this}}{{/inline}}{{#each x}}{{> a}}{{/each}}{{> b}}"#;
        assert_eq!(
            Renderer::files().render(ok, &json!({"x": [1, 2]})).unwrap(),
            "[1][2][object]"
        );
    }

    #[test]
    fn output_stops_at_the_limit_while_rendering() {
        // 10 000 × 10 000 × 10 bytes would be 1 GB.
        let t = "{{#each (range 0 10000)}}{{#each (range 0 10000)}}0123456789{{/each}}{{/each}}";
        let err = Renderer::files().render(t, &json!({})).unwrap_err();
        assert_eq!(err, TemplateError::TooLarge);
        let at_limit = format!(
            "{{{{#each (range 0 {})}}}}{}{{{{/each}}}}",
            1 << 10,
            "x".repeat(MAX_RENDERED >> 10)
        );
        assert_eq!(
            Renderer::spec()
                .render(&at_limit, &json!({}))
                .unwrap()
                .len(),
            MAX_RENDERED
        );
    }

    #[test]
    fn partial_blocks_are_refused() {
        for t in [
            "{{#> p}}x{{/p}}",
            "a {{~ #> p}}x{{/p}}",
            "{{{{raw}}}}{{/raw}}{{ #>p}}{{/p}}",
        ] {
            assert!(
                matches!(Renderer::files().render(t, &json!({})), Err(TemplateError::Render(m)) if m.contains("partial blocks")),
                "{t}"
            );
        }
        let ok = "{{#*inline \"p\"}}P{{/inline}}{{> p}}";
        assert_eq!(Renderer::files().render(ok, &json!({})).unwrap(), "P");
    }

    #[test]
    fn shielded_values_survive_the_file_phase_literally() {
        let value = "{{cluster_id}} \\{{x}} {{> p}} \u{E000}";
        let ctx = json!({"opts": {"v": value, "{{k}}": 1}, "cluster_id": "C"});
        // The spec phase writes the value into a file template; the file phase must not
        // evaluate it.
        let spec = Renderer::spec()
            .render(
                r#"{"t": "v={{opts.v}} id=\{{cluster_id}}"}"#,
                &shield(ctx.clone()),
            )
            .unwrap();
        let mut parsed: Value = serde_json::from_str(&spec).unwrap();
        let template = parsed["t"].as_str().unwrap().to_owned();
        let out = Renderer::files().render(&template, &ctx).unwrap();
        assert_eq!(
            unshield(&out),
            "v={{cluster_id}} \\{{x}} {{> p}} \u{FFFD} id=C"
        );
        unshield_value(&mut parsed);
        assert_eq!(
            parsed["t"],
            "v={{cluster_id}} \\{{x}} {{> p}} \u{FFFD} id={{cluster_id}}"
        );
        let mut keys = shield(ctx.clone());
        unshield_value(&mut keys);
        assert_eq!(keys["opts"]["{{k}}"], 1);
    }

    #[test]
    fn shielding_changes_only_braces_backslashes_and_shield_characters() {
        let ctx = json!({
            "plain": "abc", "n": 3, "list": ["x{y", "a\\b", "\u{E001}"],
            "k{": {"in": "{{z}}"}, "ok": null
        });
        let shielded = shield(ctx.clone());
        assert_eq!(
            shielded,
            json!({
                "plain": "abc", "n": 3, "list": ["x\u{E000}y", "a\u{E001}b", "\u{FFFD}"],
                "k\u{E000}": {"in": "\u{E000}\u{E000}z}}"}, "ok": null
            })
        );
        let keys: Vec<&String> = shielded.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["plain", "n", "list", "k\u{E000}", "ok"],
            "order kept"
        );
        let mut back = shielded;
        unshield_value(&mut back);
        assert_eq!(back["k{"]["in"], "{{z}}");
        assert_eq!(back["list"], json!(["x{y", "a\\b", "\u{FFFD}"]));
    }

    #[test]
    fn a_template_is_compiled_once_and_keyed_by_its_text() {
        let r = Renderer::spec();
        let t = "{{#each (range 0 opts.n)}}{{this}}{{/each}}";
        assert_eq!(r.render(t, &json!({"opts": {"n": 3}})).unwrap(), "012");
        assert_eq!(r.render(t, &json!({"opts": {"n": 2}})).unwrap(), "01");
        assert_eq!(
            r.compiled_len(),
            1,
            "the second render reused the first compile"
        );
        // A changed text (a product's new template) is another key: never the old result.
        let changed = "{{#each (range 0 opts.n)}}[{{this}}]{{/each}}";
        assert_eq!(
            r.render(changed, &json!({"opts": {"n": 2}})).unwrap(),
            "[0][1]"
        );
        assert_eq!(r.compiled_len(), 2);
        assert_eq!(r.render(t, &json!({"opts": {"n": 1}})).unwrap(), "0");
    }

    #[test]
    fn a_broken_template_is_refused_every_time_and_never_kept() {
        let r = Renderer::spec();
        for t in [
            "line1\n{{#each x}}",
            "{{#> p}}x{{/p}}",
            r#"{{#*inline "p"}}{{> p}}{{/inline}}"#,
        ] {
            let first = r.render(t, &json!({"x": []})).unwrap_err();
            let again = r.render(t, &json!({"x": []})).unwrap_err();
            assert_eq!(first, again, "{t}");
        }
        assert_eq!(r.compiled_len(), 0);
        // A template that compiles but fails with some values is kept; each render still
        // checks its own values.
        let t = "{{opts.a}}";
        assert!(r.render(t, &json!({"opts": {}})).is_err());
        assert_eq!(r.render(t, &json!({"opts": {"a": 1}})).unwrap(), "1");
        assert!(r.render(t, &json!({"opts": {}})).is_err());
        assert_eq!(r.compiled_len(), 1);
    }

    #[test]
    fn the_compiled_templates_are_bounded_and_the_recently_used_stay() {
        let r = Renderer::files();
        let hot = "hot {{x}}";
        for i in 0..CACHED_TEMPLATES * 2 {
            let t = format!("t{i} {{{{x}}}}");
            assert_eq!(r.render(&t, &json!({"x": i})).unwrap(), format!("t{i} {i}"));
            assert_eq!(r.render(hot, &json!({"x": i})).unwrap(), format!("hot {i}"));
            assert!(r.compiled_len() <= CACHED_TEMPLATES);
        }
        assert!(
            r.is_kept(hot),
            "used on every round, never the least recent"
        );
        assert!(!r.is_kept("t0 {{x}}"), "the least recently used went first");
        assert!(r.is_kept(&format!("t{} {{{{x}}}}", CACHED_TEMPLATES * 2 - 1)));
        let before = r.compiled_len();
        // A text longer than an eighth of the byte bound is rendered, never kept.
        let long = format!("{}{{{{x}}}}", "y".repeat(CACHED_BYTES / 8 + 1));
        assert!(r.render(&long, &json!({"x": 1})).unwrap().ends_with("y1"));
        assert_eq!(r.compiled_len(), before);
    }

    #[test]
    fn quote_and_word_escape_or_refuse() {
        let ctx = json!({"plain": "a.b-c:1/2", "spaced": "it's a b", "nl": "a\nb", "n": 3, "empty": "", "list": []});
        let r = Renderer::files();
        let q = |t: &str| r.render(t, &ctx);
        assert_eq!(
            q("{{quote plain}} {{word plain}} {{word n}}").unwrap(),
            "a.b-c:1/2 a.b-c:1/2 3"
        );
        assert_eq!(q("{{quote spaced}}").unwrap(), r"'it'\''s a b'");
        assert_eq!(q("{{quote empty}}").unwrap(), "''");
        for bad in [
            "{{quote nl}}",
            "{{word nl}}",
            "{{word spaced}}",
            "{{word empty}}",
            "{{quote list}}",
        ] {
            let e = q(bad).unwrap_err().to_string();
            assert!(e.contains("quote:") || e.contains("word:"), "{bad}: {e}");
        }
        assert!(
            q("{{word nl}}")
                .unwrap_err()
                .to_string()
                .contains("nl has a control character")
        );
    }

    /// Ids spread over the id space: every one of them must render as if nothing were kept.
    const IDS: [&str; 4] = [
        "01a2435d-b958-74ca-9cbe-25eed7c28e40",
        "9f0c1b2a-0000-4000-8000-aaaaaaaaaaaa",
        "00000000-0000-0000-0000-000000000001",
        "fffffffe-ffff-ffff-ffff-ffffffffffff",
    ];

    fn with_id(ctx: &Value, id: &str) -> Value {
        let mut ctx = ctx.clone();
        ctx["cluster_id"] = json!(id);
        ctx
    }

    /// Renders `template` for every id of [`IDS`], twice each (the second through what the
    /// first kept), and checks each text against a plain render; returns whether the memo
    /// kept a text for it.
    fn renders_as_without_memo(template: &str, ctx: &Value) -> bool {
        let r = Renderer::spec();
        for round in 0..2 {
            for id in IDS {
                let ctx = with_id(ctx, id);
                assert_eq!(
                    r.render_with_id(template, ctx.clone()).unwrap(),
                    r.render_value(template, ctx).unwrap(),
                    "{template} with {id}, round {round}"
                );
            }
        }
        let mut key = ctx.clone();
        key["cluster_id"] = json!(ID_LOW);
        r.ids
            .get(template, &key)
            .expect("rendered before")
            .is_some()
    }

    #[test]
    fn a_template_that_inserts_the_id_renders_from_the_kept_text() {
        let reference = include_str!("../../examples/products/reference/minimal.json");
        let ctx = json!({"opts": {"size": 3, "cpu": 0.5, "mem": 256}, "cluster_id": "x", "user": "u",
            "product": "reference", "version": "1", "node_image": "img"});
        assert!(renders_as_without_memo(reference, &ctx));
        // Printed as it is, at the top or from within blocks and partials.
        for t in [
            r#"{"dnsname": "{{cluster_id}}", "again": "{{{cluster_id}}}"}"#,
            "{{#each opts}}{{../cluster_id}}-{{@key}} {{/each}}",
            "{{#*inline \"p\"}}<{{cluster_id}}>{{/inline}}{{> p}} {{@root.cluster_id}}",
        ] {
            assert!(renders_as_without_memo(t, &ctx), "{t}");
        }
    }

    #[test]
    fn a_template_whose_output_depends_on_the_id_is_rendered_each_time() {
        let ctx = json!({"opts": {"a": 1}, "cluster_id": "x"});
        for t in [
            // Handed to a helper or a block: compared, tested, measured, or in a JSON text
            // of the whole context. The placeholders fall outside the band of the first.
            r#"{{#if (gt cluster_id "5")}}{{#if (lt cluster_id "a")}}band{{/if}}{{/if}}"#,
            r#"{{#if (gt cluster_id "8")}}high{{else}}low{{/if}}"#,
            "{{#if cluster_id}}yes{{/if}} {{len cluster_id}}",
            "{{json this}}",
            "{{#each this}}{{@key}}{{/each}}",
            "{{#each opts}}{{#if (eq ../cluster_id \"x\")}}x{{/if}}{{/each}}",
            r#"{{#if (lt cluster_id "01a2435d-b958-74ca-9cbe-25eed7c28e41")}}below{{/if}}"#,
            // Equal to a placeholder, or holding one's text: the swap would be wrong.
            r#"{{#if (eq cluster_id "00000000-0000-0000-0000-000000000000")}}least{{/if}}"#,
            "{{cluster_id}} 00000000-0000-0000-0000-000000000000",
        ] {
            assert!(!renders_as_without_memo(t, &ctx), "{t}");
        }
    }

    #[test]
    fn the_shipped_templates_that_only_print_the_id_are_known() {
        let compiled = |t: &str| Template::compile(t).unwrap();
        for shipped in [
            include_str!("../../examples/products/reference/minimal.json"),
            include_str!("../../examples/products/slurm/22.05/template.json"),
            include_str!("../../examples/products/spark/4.x/template.json"),
        ] {
            assert!(prints_id_only(&compiled(shipped)));
        }
        assert!(!prints_id_only(&compiled(
            "{{#with cluster_id}}{{this}}{{/with}}"
        )));
        assert!(!prints_id_only(&compiled("{{> p this}}")));
        assert!(!prints_id_only(&compiled("{{json @root}}")));
        assert!(!prints_id_only(&compiled("{{lookup this \"cluster_id\"}}")));
    }

    #[test]
    fn contexts_that_differ_only_in_key_order_are_kept_apart() {
        let r = Renderer::spec();
        let t = "{{#each opts}}{{@key}}{{/each}} {{cluster_id}}";
        let id = IDS[0];
        let ab = json!({"opts": {"a": 1, "b": 2}, "cluster_id": id});
        let ba = json!({"opts": {"b": 2, "a": 1}, "cluster_id": id});
        assert_eq!(r.render_with_id(t, ab).unwrap(), format!("ab {id}"));
        assert_eq!(r.render_with_id(t, ba).unwrap(), format!("ba {id}"));
    }

    #[test]
    fn a_context_without_an_id_or_with_another_one_is_rendered_plainly() {
        let r = Renderer::spec();
        for (ctx, out) in [
            (json!({"cluster_id": "Not-An-Id"}), "Not-An-Id"),
            (json!({"cluster_id": 7}), "7"),
        ] {
            assert_eq!(r.render_with_id("{{cluster_id}}", ctx).unwrap(), out);
        }
        assert!(r.ids.lock().map.is_empty());
        assert!(r.render_with_id("{{cluster_id}}", json!({})).is_err());
    }
}
