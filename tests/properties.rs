//! Property tests of the parsers and renderers that take outside input: the RecordIO decoder
//! (bytes from the Mesos master or agent), options validation (a user's launch options
//! against an admin's options document) and template rendering (an admin's template with a
//! user's option values). Arbitrary input gives a value or a typed error, never a panic, and
//! the valid cases round-trip.
//!
//! Every property runs a fixed number of cases from a fixed seed, so a CI run is bounded and
//! repeatable; `PROPTEST_RNG_SEED=<u64>` explores other inputs. No failure-persistence files
//! are written (a failure prints its shrunk input; add it as a unit test).

use bytes::Bytes;
use paas::domain::launch_request::{
    Caller, Fresh, LaunchError, LaunchRequest, Policy, check_template,
};
use paas::domain::options::OptionsDoc;
use paas::domain::template::{Renderer, TemplateError};
use paas::domain::{ClusterId, Name, Product, Timestamp};
use paas::recordio::{self, Decoder, RecordIoError};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Map, Value, json};

/// Cases per property: enough to find the bugs below in seconds, few enough for CI.
const CASES: u32 = 256;
/// The default seed; a run with the same seed sees the same inputs.
const SEED: u64 = 0x5eed_0011;

fn config() -> Config {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    Config {
        cases: CASES,
        rng_seed: RngSeed::Fixed(seed),
        // No `proptest-regressions/` files in the repository.
        failure_persistence: None,
        // Bounded shrinking: a failure is reported in bounded time too.
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// RecordIO

/// What a decoder made of a stream: the records before the first error, and that error (or
/// the `finish` verdict).
#[derive(Debug, PartialEq)]
struct Outcome {
    records: Vec<Bytes>,
    end: Result<(), RecordIoError>,
}

/// Feeds `wire` in the chunks that `cuts` mark, draining after each chunk as the scheduler's
/// transport does, and checks the decoder's contract on the way.
fn decode(wire: &[u8], cuts: &[Index], max: usize) -> Result<Outcome, TestCaseError> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
    at.push(0);
    at.push(wire.len());
    at.sort_unstable();
    let mut d = Decoder::with_max_record_size(max);
    let mut records = Vec::new();
    for pair in at.windows(2) {
        d.push(&wire[pair[0]..pair[1]]);
        loop {
            match d.next_record() {
                Ok(Some(r)) => {
                    prop_assert!(r.len() <= max, "a record over the limit came out");
                    records.push(r);
                }
                Ok(None) => break,
                Err(e) => {
                    prop_assert!(!matches!(e, RecordIoError::Failed(_)), "first error: {e}");
                    // Sticky, and a failed decoder holds nothing more.
                    d.push(wire);
                    prop_assert_eq!(d.buffered(), 0);
                    prop_assert_eq!(
                        d.next_record(),
                        Err(RecordIoError::Failed(Box::new(e.clone())))
                    );
                    prop_assert!(d.finish().is_err());
                    return Ok(Outcome {
                        records,
                        end: Err(e),
                    });
                }
            }
        }
    }
    let end = d.finish();
    if end.is_ok() {
        prop_assert_eq!(d.buffered(), 0);
    }
    Ok(Outcome { records, end })
}

/// Streams that are partly valid: encoded records, digits and newlines, and raw bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|p| recordio::encode(&p).to_vec()),
        2 => "[0-9]{0,4}\n?".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

fn max_record() -> impl Strategy<Value = usize> {
    prop_oneof![Just(recordio::DEFAULT_MAX_RECORD_SIZE), 0usize..48]
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, cut anywhere: records or an error, never a panic; and the outcome does not
    /// depend on how the bytes were chunked (HTTP chunks are unrelated to records).
    #[test]
    fn recordio_any_bytes_any_chunking(
        wire in prop_oneof![stream(), proptest::collection::vec(any::<u8>(), 0..256)],
        cuts in proptest::collection::vec(any::<Index>(), 0..8),
        max in max_record(),
    ) {
        let whole = decode(&wire, &[], max)?;
        let chunked = decode(&wire, &cuts, max)?;
        prop_assert_eq!(&chunked, &whole);
    }

    /// encode → decode is the identity for any records and any chunk boundaries.
    #[test]
    fn recordio_roundtrip(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..16),
        cuts in proptest::collection::vec(any::<Index>(), 0..16),
    ) {
        let wire: Vec<u8> = records.iter().flat_map(|r| recordio::encode(r).to_vec()).collect();
        let got = decode(&wire, &cuts, recordio::DEFAULT_MAX_RECORD_SIZE)?;
        let want: Vec<Bytes> = records.into_iter().map(Bytes::from).collect();
        prop_assert_eq!(got, Outcome { records: want, end: Ok(()) });
    }
}

// ---------------------------------------------------------------------------------------------
// Options

/// Any JSON value, a few levels deep. Floats are finite (JSON has no other kind).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        // Numeric and boolean text, which options accept in place of numbers and booleans.
        "[ ]?-?[0-9]{1,20}(\\.[0-9]{0,3})?(e[0-9]{1,3})?[ ]?".prop_map(Value::from),
        prop_oneof![
            Just("true"),
            Just("false"),
            Just("True"),
            Just("NaN"),
            Just("inf")
        ]
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Option names: mostly from a small set, so that user options and documents meet.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![Just("size"), Just("cpu"), Just("name"), Just("image"), Just("debug"), Just("heap")]
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn object(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(key(), values, 0..6).prop_map(|m| m.into_iter().collect())
}

/// Options documents: mostly of the right shape, with arbitrary sections and values.
fn options_doc_value() -> impl Strategy<Value = Value> {
    let section = prop_oneof![
        Just("required"),
        Just("optional"),
        Just("advanced"),
        Just("descriptions"),
        Just("requierd"),
    ];
    let shaped = proptest::collection::btree_map(
        section,
        prop_oneof![4 => object(json_value()).prop_map(Value::Object), 1 => json_value()],
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    prop_oneof![4 => shaped, 1 => json_value()]
}

/// The invariants of [`OptionsDoc::resolve`], for any document and any user options.
fn check_resolve(doc: &OptionsDoc, user: &Map<String, Value>) -> Result<(), TestCaseError> {
    let known = |k: &String| {
        doc.required.contains_key(k) || doc.optional.contains_key(k) || doc.advanced.contains_key(k)
    };
    match doc.resolve(user) {
        Ok(out) => {
            for k in out.keys() {
                prop_assert!(known(k), "resolved an unknown key {k:?}");
            }
            for k in doc.required.keys() {
                prop_assert!(
                    out.contains_key(k),
                    "required {k:?} missing from the result"
                );
            }
            for k in doc.optional.keys().chain(doc.advanced.keys()) {
                prop_assert!(out.contains_key(k), "default {k:?} missing from the result");
            }
            // Resolved options are already of their kinds: resolving them again changes nothing.
            prop_assert_eq!(doc.resolve(&out), Ok(out.clone()));
        }
        Err(e) => {
            let missing: Vec<String> = doc
                .required
                .keys()
                .filter(|k| !user.contains_key(*k))
                .cloned()
                .collect();
            let unknown: Vec<String> = user.keys().filter(|k| !known(k)).cloned().collect();
            prop_assert_eq!(&e.missing, &missing);
            prop_assert_eq!(&e.unknown, &unknown);
            for k in e.wrong_type.keys() {
                prop_assert!(user.contains_key(k) && known(k), "wrong_type names {k:?}");
            }
            prop_assert!(
                !(e.missing.is_empty() && e.unknown.is_empty() && e.wrong_type.is_empty()),
                "an error that names nothing"
            );
            // The message names every key concerned.
            let text = e.to_string();
            for k in e
                .missing
                .iter()
                .chain(&e.unknown)
                .chain(e.wrong_type.keys())
            {
                prop_assert!(text.contains(k.as_str()), "{text:?} does not name {k:?}");
            }
        }
    }
    Ok(())
}

/// The options documents the shipped products use.
fn product_docs() -> Vec<OptionsDoc> {
    [
        include_str!("../examples/products/slurm/22.05/options.json"),
        include_str!("../examples/products/spark/4.x/options.json"),
    ]
    .iter()
    .map(|text| {
        let v: Value = serde_json::from_str(text).expect("example options are JSON");
        OptionsDoc::from_value(v).expect("example options are valid")
    })
    .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Any JSON as an options document: a document or a typed error; and a document then
    /// takes any user options to resolved options or an error listing every bad key.
    #[test]
    fn options_any_document_any_user_options(
        doc in options_doc_value(),
        user in object(json_value()),
    ) {
        if let Ok(doc) = OptionsDoc::from_value(doc) {
            check_resolve(&doc, &user)?;
        }
    }

    /// The shipped products' documents against any user options.
    #[test]
    fn options_product_documents_any_user_options(
        which in any::<Index>(),
        user in object(json_value()),
    ) {
        let docs = product_docs();
        check_resolve(which.get(&docs), &user)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Templates

/// Template text: well-formed handlebars (balanced blocks, inline partials that may call each
/// other) or a soup of its pieces and noise, so both the parser's errors and every helper,
/// block and partial path are reached. Literal numbers stay small: this tests robustness,
/// not the `range` bound (`MAX_RANGE` has its own unit test) or the size limit.
fn template_text() -> impl Strategy<Value = String> {
    prop_oneof![well_formed_template(), partials_template(), template_soup()]
}

/// Inline partials that include each other (or not), then calls: recursion that no data ends
/// used to overflow the stack.
fn partials_template() -> impl Strategy<Value = String> {
    let name = prop_oneof![Just("p"), Just("q"), Just("r")];
    let call = (
        name.clone(),
        prop_oneof![Just(""), Just(" opts"), Just(" x=1")],
    )
        .prop_map(|(n, arg)| format!("{{{{> {n}{arg}}}}}"));
    let part = prop_oneof![
        2 => call.clone(),
        1 => expression(),
        1 => call.clone().prop_map(|c| format!("{{{{#each opts.list}}}}{c}{{{{/each}}}}")),
        1 => (name.clone(), call.clone()).prop_map(|(n, c)| format!("{{{{#> {n}}}}}{c}{{{{/{n}}}}}")),
    ];
    let definition = (name, proptest::collection::vec(part, 0..4))
        .prop_map(|(n, body)| format!("{{{{#*inline \"{n}\"}}}}{}{{{{/inline}}}}", body.concat()));
    (
        proptest::collection::vec(definition, 0..4),
        proptest::collection::vec(call, 1..3),
    )
        .prop_map(|(defs, calls)| defs.concat() + &calls.concat())
}

/// Expressions: mostly ones that render with [`context`], some that fail (strict mode, bad
/// helper arguments, dynamic partial names).
fn expression() -> impl Strategy<Value = String> {
    let renders = prop_oneof![
        Just("{{opts.name}}"),
        Just("{{opts.size}}"),
        Just("{{{json opts}}}"),
        Just("{{json opts.list}}"),
        Just("{{cluster_id}}"),
        Just("{{user}}"),
        Just("{{this}}"),
        Just("{{~opts.name~}}"),
        Just("{{add opts.size 1}}"),
        Just("{{sub 1 opts.name}}"),
        Just("{{mul opts.size opts.size}}"),
        Just("{{join opts.list \",\"}}"),
        Just("{{hostports opts.list \"http\"}}"),
        Just("{{lookup opts \"name\"}}"),
        Just("{{eq opts.size 1}}"),
        Just("{{!-- c --}}"),
        Just("{{! c }}"),
        Just("{{> p}}"),
        Just("{{> q}}"),
        Just("{{~> p}}"),
        Just("{{> p opts}}"),
        Just("{{> @partial-block}}"),
    ];
    let fails = prop_oneof![
        Just("{{nope}}"),
        Just("{{opts.nope.deeper}}"),
        Just("{{add}}"),
        Just("{{range}}"),
        Just("{{range \"a\" 2}}"),
        Just("{{json}}"),
        Just("{{join opts.name 1}}"),
        Just("{{@index}}"),
        Just("{{../opts.name}}"),
        Just("{{> (lookup opts \"name\")}}"),
    ];
    prop_oneof![6 => renders, 1 => fails].prop_map(str::to_owned)
}

fn well_formed_template() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![3 => expression(), 1 => "[ -~]{0,6}"];
    let node = leaf.prop_recursive(4, 32, 4, |inner| {
        let body = proptest::collection::vec(inner, 0..4).prop_map(|v| v.concat());
        let open_close = prop_oneof![
            Just(("{{#each opts.list}}", "{{/each}}")),
            Just(("{{#each (range 0 opts.size)}}", "{{/each}}")),
            Just(("{{#each (range 0 3)}}", "{{/each}}")),
            Just(("{{#if opts.debug}}", "{{else}}x{{/if}}")),
            Just(("{{#if (gt opts.size 2)}}", "{{/if}}")),
            Just(("{{#unless @first}}", "{{/unless}}")),
            Just(("{{#with opts}}", "{{/with}}")),
            Just(("{{#*inline \"p\"}}", "{{/inline}}")),
            Just(("{{#*inline \"q\"}}", "{{/inline}}")),
            Just(("{{#> p}}", "{{/p}}")),
            Just(("{{#> r}}", "{{/r}}")),
        ];
        (open_close, body).prop_map(|((open, close), body)| format!("{open}{body}{close}"))
    });
    proptest::collection::vec(node, 0..6).prop_map(|v| v.concat())
}

fn template_soup() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        4 => prop_oneof![
            Just("{{"), Just("}}"), Just("{{{"), Just("}}}"), Just("{{~"), Just("~}}"), Just("\\{{"),
            Just("{{#each opts.list}}"), Just("{{/each}}"), Just("{{#if opts.debug}}"), Just("{{else}}"),
            Just("{{/if}}"), Just("{{else if opts.debug}}"), Just("{{#*inline \"p\"}}"), Just("{{/inline}}"),
            Just("{{#> p}}"), Just("{{/p}}"), Just("{{#*inline opts.name}}"),
            Just("(add 1 2)"), Just("\""), Just("\\"), Just(","), Just("{"), Just("}"), Just("\n"),
        ].prop_map(str::to_owned),
        4 => expression(),
        2 => "[ -~]{0,6}",
        1 => any::<String>(),
    ];
    proptest::collection::vec(fragment, 0..24).prop_map(|v| v.concat())
}

/// A render context like the spec phase's: `opts` of any values (`size` small, so loops stay
/// small; the keys the templates above name are always there), and the fixed facts.
fn context() -> impl Strategy<Value = Value> {
    (
        object(json_value()),
        -3i64..12,
        proptest::collection::vec(json_value(), 0..4),
        json_value(),
        json_value(),
    )
        .prop_map(|(mut opts, size, list, name, debug)| {
            opts.insert("size".into(), json!(size));
            opts.insert("list".into(), Value::Array(list));
            opts.insert("name".into(), name);
            opts.insert("debug".into(), debug);
            json!({"opts": opts, "cluster_id": "c", "user": "u", "product": "p", "version": "1"})
        })
}

/// A valid product template that puts option values inside JSON strings, and one whole value
/// as JSON, in the places where a launch puts them.
const ESCAPING_TEMPLATE: &str = r#"{
  "nodes": {
    "n0": {"docker_image": "{{node_image}}", "cpu": 1, "mem": 64, "services": ["s"],
           "env": {"NAME": "{{opts.name}}", "OWNER": "{{user}}"},
           "tags": ["{{opts.name}}", "x{{opts.name}}y"]}
  },
  "services": {"s": {"files": [{"path": "/etc/s.conf", "template": "name={{opts.name}}"}]}},
  "label": "{{opts.name}}",
  "value": {{{json opts.value}}}
}"#;

fn product() -> Product {
    Product::new(
        Name::parse("prop").expect("valid name"),
        Name::parse("1.0").expect("valid version"),
        Timestamp("2026-12-01T00:00:00.000Z".into()),
    )
}

/// An admin launch with no volume roots (the templates here mount nothing).
const ADMIN: Policy<'static> = Policy {
    caller: Caller::Admin,
    volume_roots: &[],
};

fn fresh() -> Fresh {
    Fresh {
        id: ClusterId(uuid::Uuid::from_u128(11)),
        secret: "not-a-real-secret".into(),
        make_secret: || "0".repeat(64),
        now: Timestamp("2026-12-01T12:00:00.000Z".into()),
    }
}

/// JSON values that survive a text round trip exactly (floats may not, by one ulp).
fn exact_json_value() -> impl Strategy<Value = Value> {
    json_value().prop_filter("no floats", |v| !has_float(v))
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any template text with any option values: output or a typed error, in both phases;
    /// never a panic, never a stack overflow (recursive partials are refused up front).
    #[test]
    fn templates_any_text_any_options(text in template_text(), ctx in context()) {
        for renderer in [Renderer::spec(), Renderer::files()] {
            match renderer.render(&text, &ctx) {
                Ok(out) => prop_assert!(out.len() <= paas::domain::template::MAX_RENDERED),
                Err(TemplateError::Render(m)) => prop_assert!(!m.is_empty()),
                Err(TemplateError::TooLarge) => {}
            }
        }
    }

    /// The memo of texts rendered with a placeholder id gives what a plain render gives,
    /// for any template, any context and any ids, one after the other on one renderer (the
    /// later ones through what the first kept).
    #[test]
    fn templates_rendered_with_an_id_as_without_the_memo(
        text in template_text(),
        ctx in context(),
        ids in proptest::collection::vec(any::<u128>(), 1..4),
    ) {
        let renderer = Renderer::spec();
        for id in ids.iter().chain(&ids) {
            let mut ctx = ctx.clone();
            ctx["cluster_id"] = json!(uuid::Uuid::from_u128(*id).to_string());
            let memo = renderer.render_with_id(&text, ctx.clone());
            let plain = renderer.render_value(&text, ctx);
            match (memo, plain) {
                (Ok(memo), Ok(plain)) => prop_assert_eq!(memo, plain),
                (Err(memo), Err(plain)) => prop_assert_eq!(memo.to_string(), plain.to_string()),
                (memo, plain) => prop_assert!(false, "memo {memo:?}, plain {plain:?}"),
            }
        }
    }

    /// Any string option value and any owner land in the spec verbatim: JSON-escaped in the
    /// spec phase, so they never break out of their string or change the spec's shape.
    #[test]
    fn templates_option_values_are_json_escaped(
        name in any::<String>(),
        owner in any::<String>(),
        value in exact_json_value(),
    ) {
        let doc = OptionsDoc::from_value(json!({"optional": {"name": "n", "value": {}}}))
            .expect("valid document");
        let product = product();
        let mut user = Map::new();
        user.insert("name".into(), Value::String(name.clone()));
        let value_kind_matches = value.is_object();
        user.insert("value".into(), value.clone());
        let request = LaunchRequest {
            product: &product,
            template: ESCAPING_TEMPLATE,
            options: &doc,
            user_options: &user,
            owner: &owner,
            node_image: "paas-node:test",
            policy: ADMIN,
        };
        match request.cluster(&Renderer::spec(), fresh()) {
            Ok(cluster) => {
                prop_assert!(value_kind_matches, "a non-object value was accepted");
                prop_assert_eq!(cluster.nodes.len(), 1);
                let node = &cluster.nodes[0];
                prop_assert_eq!(node.env.get("NAME"), Some(&name));
                prop_assert_eq!(node.env.get("OWNER"), Some(&owner));
                prop_assert_eq!(&node.tags, &vec![name.clone(), format!("x{name}y")]);
                prop_assert_eq!(node.docker_image.as_str(), "paas-node:test");
                prop_assert_eq!(cluster.extra.get("label"), Some(&Value::String(name.clone())));
                prop_assert_eq!(cluster.extra.get("value"), Some(&value));
                prop_assert_eq!(cluster.services.len(), 1);
                let files = &cluster.services[0].files;
                prop_assert_eq!(files.len(), 1);
                // The file template itself is text for the configure-time phase, which
                // renders it again; only its spec-phase shape is checked here.
                prop_assert_eq!(files[0].path.as_str(), "/etc/s.conf");
                prop_assert!(files[0].template.starts_with("name="));
            }
            Err(LaunchError::Options(e)) => {
                prop_assert!(!value_kind_matches, "an object value was refused: {e}");
                prop_assert_eq!(e.wrong_type.keys().collect::<Vec<_>>(), vec!["value"]);
            }
            Err(e) => prop_assert!(false, "the template failed: {e:?}"),
        }
    }

    /// The shipped product templates with any user options: a cluster or a typed error.
    #[test]
    fn templates_products_any_user_options(
        which in any::<Index>(),
        mut user in object(json_value()),
        size in prop_oneof![(-3i64..8).prop_map(Value::from), json_value()],
        owner in any::<String>(),
    ) {
        let products = [
            (include_str!("../examples/products/slurm/22.05/template.json"),
             include_str!("../examples/products/slurm/22.05/options.json")),
            (include_str!("../examples/products/spark/4.x/template.json"),
             include_str!("../examples/products/spark/4.x/options.json")),
        ];
        let (template, options) = which.get(&products);
        let doc = OptionsDoc::from_value(serde_json::from_str(options).expect("JSON"))
            .expect("valid document");
        // `size` bounds the number of nodes, and a huge one is only slow, not interesting.
        let as_number = size
            .as_f64()
            .or_else(|| size.as_str().and_then(|s| s.trim().parse::<f64>().ok()));
        if as_number.is_some_and(|n| n.abs() > 64.0) {
            user.insert("size".into(), json!(3));
        } else {
            user.insert("size".into(), size);
        }
        let product = product();
        check_template(&Renderer::spec(), &product, template, &doc, "paas-node:test")
            .expect("the shipped template renders with its defaults");
        let request = LaunchRequest {
            product: &product,
            template,
            options: &doc,
            user_options: &user,
            owner: &owner,
            node_image: "paas-node:test",
            policy: ADMIN,
        };
        match request.cluster(&Renderer::spec(), fresh()) {
            Ok(cluster) => prop_assert!(!cluster.nodes.is_empty()),
            Err(LaunchError::Options(e)) => check_resolve(&doc, &user).map_err(|f| {
                TestCaseError::fail(format!("{f}; options error {e}"))
            })?,
            Err(LaunchError::Render(_)) => {}
            Err(e @ (LaunchError::AdminOnly(_) | LaunchError::Volume(_))) => {
                prop_assert!(false, "an admin launch of a shipped product: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendered specs

/// Spec-shaped JSON: `nodes` and `services` objects whose entries mix the fields a node or a
/// service has with arbitrary values, so that every field's validation is reached.
fn spec_value() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just("docker_image"),
        Just("cpu"),
        Just("mem"),
        Just("disk"),
        Just("ports"),
        Just("services"),
        Just("env"),
        Just("command"),
        Just("volumes"),
        Just("tags"),
        Just("nodes"),
        Just("files"),
        Just("start"),
        Just("ready"),
        Just("reload"),
        Just("host_path"),
        Just("container_path"),
        Just("mode"),
        Just("path"),
        Just("template"),
    ]
    .prop_map(str::to_owned);
    let entry = proptest::collection::btree_map(field, json_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let name = prop_oneof![Just("n0".to_owned()), Just("s".to_owned()), any::<String>()];
    let table = proptest::collection::btree_map(name, entry, 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let part = prop_oneof![
        Just("nodes"),
        Just("services"),
        Just("restart"),
        Just("dnsname"),
    ];
    proptest::collection::btree_map(part, prop_oneof![3 => table, 1 => json_value()], 0..4)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

proptest! {
    #![proptest_config(config())]

    /// Whatever a template renders, the spec parser gives a spec or an error naming a path,
    /// never a panic; and a spec keeps every node it was given.
    #[test]
    fn rendered_specs_parse_or_name_the_problem(
        spec in prop_oneof![3 => spec_value(), 1 => json_value()],
        text in any::<String>(),
    ) {
        use paas::domain::cluster::{ClusterSpec, SpecError};
        match ClusterSpec::parse(&spec.to_string()) {
            Ok(parsed) => {
                let given = spec.get("nodes").and_then(Value::as_object).map_or(0, Map::len);
                prop_assert_eq!(parsed.nodes.len(), given);
            }
            Err(SpecError::Invalid { path, why }) => {
                prop_assert!(!path.is_empty() && !why.is_empty());
            }
            Err(SpecError::Json(e)) => prop_assert!(false, "valid JSON refused as JSON: {e}"),
        }
        prop_assert!(ClusterSpec::parse(&text).is_err() || serde_json::from_str::<Value>(&text).is_ok());
    }
}
