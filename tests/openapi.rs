//! The OpenAPI document served at `/v1/openapi.yaml`, read by a real YAML parser: it parses, it
//! documents exactly the routes of the route table, every `$ref` resolves, every path parameter is
//! declared, every response has a description, and no value is null (in a flow mapping a stray
//! comma or `: ` turns prose into keys of null without any parse error).
use augur::serve::openapi::{DOCUMENT, operations};
use augur::serve::routes::ROUTES;
use yaml_rust2::{Yaml, YamlLoader};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn load(text: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("/v1/openapi.yaml is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn hash(y: &Yaml, what: &str) -> Vec<(String, Yaml)> {
    match y {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| {
                let k = k
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| k.as_i64().map(|i| i.to_string()))
                    .unwrap_or_else(|| panic!("{what}: a key that is not a string: {k:?}"));
                (k, v.clone())
            })
            .collect(),
        other => panic!("{what} is not a mapping: {other:?}"),
    }
}

/// Paths (as `/a/b/0`) of every null or unparsable value under `y`, but in an `enum`.
fn nulls(y: &Yaml, at: &str, out: &mut Vec<String>) {
    match y {
        Yaml::Null | Yaml::BadValue => out.push(at.to_string()),
        // `enum: [null]` says "null or absent" on purpose.
        Yaml::Array(_) if at.ends_with("/enum") => {}
        Yaml::Array(v) => v
            .iter()
            .enumerate()
            .for_each(|(i, v)| nulls(v, &format!("{at}/{i}"), out)),
        Yaml::Hash(_) => {
            for (k, v) in hash(y, at) {
                nulls(&v, &format!("{at}/{k}"), out)
            }
        }
        _ => {}
    }
}

/// Every `$ref` string under `y`.
fn refs(y: &Yaml, out: &mut Vec<String>) {
    match y {
        Yaml::Array(v) => v.iter().for_each(|v| refs(v, out)),
        Yaml::Hash(_) => {
            for (k, v) in hash(y, "$ref") {
                match (k.as_str(), v.as_str()) {
                    ("$ref", Some(r)) => out.push(r.to_string()),
                    _ => refs(&v, out),
                }
            }
        }
        _ => {}
    }
}

/// What a local reference (`#/components/...`) points at; BadValue when nothing.
fn follow<'a>(doc: &'a Yaml, r: &str) -> &'a Yaml {
    let mut at = doc;
    for part in r.trim_start_matches("#/").split('/') {
        at = &at[part];
    }
    at
}

/// Follows `y` if it is a `$ref`.
fn resolve<'a>(doc: &'a Yaml, y: &'a Yaml) -> &'a Yaml {
    match y["$ref"].as_str() {
        Some(r) => follow(doc, r),
        None => y,
    }
}

fn documented(doc: &Yaml) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in hash(&doc["paths"], "paths") {
        for (method, _) in hash(&item, &path) {
            if METHODS.contains(&method.as_str()) {
                out.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_document_is_valid_yaml_and_openapi_3() {
    let doc = load(DOCUMENT);
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.0."), "openapi: {version:?}");
    assert!(doc["info"]["title"].as_str().is_some());
    assert!(doc["info"]["version"].as_str().is_some());
    let mut bad = Vec::new();
    nulls(&doc, "", &mut bad);
    assert!(
        bad.is_empty(),
        "null values (a comma or `: ` in a flow mapping?): {bad:?}"
    );
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let doc = load(DOCUMENT);
    let mut ours: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    ours.sort();
    assert_eq!(documented(&doc), ours);
    // The line reader the daemon's own tests use agrees with the parser.
    let mut read = operations(DOCUMENT);
    read.sort();
    assert_eq!(read, ours);
}

#[test]
fn every_reference_resolves() {
    let doc = load(DOCUMENT);
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        assert!(r.starts_with("#/components/"), "{r}: only local references");
        let target = follow(&doc, &r);
        assert!(
            matches!(target, Yaml::Hash(_)),
            "{r} does not resolve to an object"
        );
    }
}

#[test]
fn every_operation_declares_its_parameters_and_describes_its_answers() {
    let doc = load(DOCUMENT);
    let mut ids = Vec::new();
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][path.as_str()][method.to_ascii_lowercase().as_str()];
        let what = format!("{method} {path}");
        if let Some(id) = op["operationId"].as_str() {
            assert!(
                !ids.contains(&id.to_string()),
                "{what}: operationId {id} twice"
            );
            ids.push(id.to_string());
        }
        // Path templates: each `{name}` is a required path parameter.
        let declared: Vec<(String, bool)> = op["parameters"]
            .as_vec()
            .map(|ps| {
                ps.iter()
                    .map(|p| resolve(&doc, p))
                    .filter(|p| p["in"].as_str() == Some("path"))
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or_default().to_string(),
                            p["required"].as_bool() == Some(true),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let templated: Vec<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        for t in &templated {
            assert!(
                declared.contains(&(t.clone(), true)),
                "{what}: path parameter {t} is not declared as required"
            );
        }
        assert_eq!(declared.len(), templated.len(), "{what}: path parameters");
        // Answers: at least one 2xx; every answer described; every error is the JSON Error.
        let responses = hash(&op["responses"], &format!("{what} responses"));
        assert!(
            responses.iter().any(|(s, _)| s.starts_with('2')),
            "{what}: no 2xx answer"
        );
        for (status, r) in responses {
            let r = resolve(&doc, &r);
            assert!(
                r["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{what} {status}: no description"
            );
            let code: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{what}: status {status:?}"));
            if code >= 400 {
                let schema = &r["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema.as_str(),
                    Some("#/components/schemas/Error"),
                    "{what} {status}: errors are JSON {{error, detail}}"
                );
            }
        }
    }
}

#[test]
fn the_null_check_catches_prose_split_by_a_flow_mapping() {
    // What the document once had: the comma ends the description, `hex.` becomes a null key.
    let y = load("a: {type: string, description: SHA-256 of the bytes, hex.}");
    let mut bad = Vec::new();
    nulls(&y, "", &mut bad);
    assert_eq!(bad, vec!["/a/hex.".to_string()]);
    // And `: ` inside plain prose does not parse at all.
    assert!(
        YamlLoader::load_from_str("d: {description: A, or `{results: [x]}` for a batch.}").is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// The what-if `state` of POST /v1/predict: the document's `WhatIf` and the server's checks agree
// key by key and bound by bound. The schema is walked here (with `$ref`, one-member `allOf` and
// `nullable` followed), and every key, bound and null it states is put to the server's own check.

use augur::sense::Snapshot;
use augur::serve::body;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Item,
}

#[derive(Debug)]
enum Kind {
    Object,
    Array,
    Number { min: f64, max: f64, integer: bool },
    Text,
    Flag,
}

/// Where a schema node is, what it is, and whether it may be null.
#[derive(Debug)]
struct Node {
    path: Vec<Step>,
    kind: Kind,
    nullable: bool,
}

fn show(path: &[Step]) -> String {
    let mut s = String::new();
    for p in path {
        match p {
            Step::Key(k) if s.is_empty() => s.push_str(k),
            Step::Key(k) => s.push_str(&format!(".{k}")),
            Step::Item => s.push_str("[0]"),
        }
    }
    s
}

/// The schema `y` stands for, and whether `nullable` was said on the way to it.
fn deref<'a>(doc: &'a Yaml, mut y: &'a Yaml) -> (&'a Yaml, bool) {
    let mut nullable = false;
    loop {
        nullable |= y["nullable"].as_bool() == Some(true);
        if let Some(r) = y["$ref"].as_str() {
            y = follow(doc, r);
        } else if let Some(all) = y["allOf"].as_vec() {
            assert_eq!(all.len(), 1, "allOf of one schema only");
            y = &all[0];
        } else {
            return (y, nullable);
        }
    }
}

fn num(y: &Yaml) -> Option<f64> {
    y.as_f64().or_else(|| y.as_i64().map(|i| i as f64))
}

/// Every node under `y`, objects and arrays too.
fn walk(doc: &Yaml, y: &Yaml, path: Vec<Step>, out: &mut Vec<Node>) {
    let (s, nullable) = deref(doc, y);
    let at = show(&path);
    let kind = match s["type"].as_str() {
        Some("object") => {
            assert_eq!(
                s["additionalProperties"].as_bool(),
                Some(false),
                "state.{at}: every object of a what-if state is closed"
            );
            out.push(Node {
                path: path.clone(),
                kind: Kind::Object,
                nullable,
            });
            for (k, v) in hash(&s["properties"], &at) {
                let mut p = path.clone();
                p.push(Step::Key(k));
                walk(doc, &v, p, out);
            }
            return;
        }
        Some("array") => {
            out.push(Node {
                path: path.clone(),
                kind: Kind::Array,
                nullable,
            });
            let mut p = path;
            p.push(Step::Item);
            walk(doc, &s["items"], p, out);
            return;
        }
        Some(t @ ("number" | "integer")) => Kind::Number {
            min: num(&s["minimum"]).unwrap_or_else(|| panic!("state.{at}: no minimum")),
            max: num(&s["maximum"]).unwrap_or_else(|| panic!("state.{at}: no maximum")),
            integer: t == "integer",
        },
        Some("string") => Kind::Text,
        Some("boolean") => Kind::Flag,
        other => panic!("state.{at}: type {other:?}"),
    };
    out.push(Node {
        path,
        kind,
        nullable,
    });
}

/// A state that holds `v` at `path`.
fn patch(path: &[Step], v: Value) -> Value {
    path.iter().rev().fold(v, |v, step| match step {
        Step::Key(k) => {
            let mut m = serde_json::Map::new();
            m.insert(k.clone(), v);
            Value::Object(m)
        }
        Step::Item => json!([v]),
    })
}

/// A state with every key of the schema, each with a valid value.
fn full(doc: &Yaml, y: &Yaml) -> Value {
    let (s, _) = deref(doc, y);
    match s["type"].as_str() {
        Some("object") => Value::Object(
            hash(&s["properties"], "full")
                .into_iter()
                .map(|(k, v)| (k, full(doc, &v)))
                .collect(),
        ),
        Some("array") => json!([full(doc, &s["items"])]),
        Some("integer") => {
            json!(
                ((num(&s["minimum"]).unwrap_or(0.0) + num(&s["maximum"]).unwrap_or(0.0)) / 2.0)
                    .floor() as i64
            )
        }
        Some("number") => {
            json!((num(&s["minimum"]).unwrap_or(0.0) + num(&s["maximum"]).unwrap_or(0.0)) / 2.0)
        }
        Some("string") => json!("x"),
        _ => json!(true),
    }
}

fn keys(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                keys(x, &p, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys(x, &format!("{at}[]"), out)),
        _ => {}
    }
}

fn server(state: &Value) -> Result<Arc<Snapshot>, String> {
    let live = Arc::new(Snapshot::default());
    let Value::Object(m) = state else {
        panic!("a state is an object")
    };
    body::what_if(&live, Some(m), 2.0)
        .map(|(s, _)| s)
        .map_err(|e| e.detail)
}

#[test]
fn the_what_if_state_is_exactly_what_the_server_takes() {
    let doc = load(DOCUMENT);
    let what_if = &doc["components"]["schemas"]["WhatIf"];
    let mut nodes = Vec::new();
    walk(&doc, what_if, Vec::new(), &mut nodes);
    assert!(nodes.len() > 100, "{} nodes", nodes.len());
    let mut wrong = Vec::new();
    let mut expect = |state: Value, ok: bool, why: &str| {
        let r = server(&state);
        if r.is_ok() != ok {
            wrong.push(format!(
                "{state}: the document says {}, the server {} ({why})",
                if ok { "valid" } else { "invalid" },
                match &r {
                    Ok(_) => "accepts it".to_string(),
                    Err(e) => format!("refuses it: {e}"),
                }
            ));
        }
    };
    for n in &nodes {
        let at = show(&n.path);
        if !n.path.is_empty() {
            expect(
                patch(&n.path, Value::Null),
                n.nullable,
                &format!("{at}: null"),
            );
        }
        match &n.kind {
            Kind::Array => {
                expect(
                    patch(&n.path, json!({})),
                    false,
                    &format!("{at}: an object"),
                );
            }
            Kind::Object => {
                // serde would read a struct from an array as well.
                if !n.path.is_empty() {
                    expect(patch(&n.path, json!([])), false, &format!("{at}: an array"));
                    expect(
                        patch(&n.path, json!([null])),
                        false,
                        &format!("{at}: an array"),
                    );
                }
                let mut p = n.path.clone();
                p.push(Step::Key("not_a_field".into()));
                expect(patch(&p, json!(1)), false, &format!("{at}: an unknown key"));
                expect(
                    patch(&p, json!(-1)),
                    false,
                    &format!("{at}: an unknown key"),
                );
            }
            Kind::Number { min, max, integer } => {
                let d = |b: f64| {
                    if *integer {
                        1.0
                    } else {
                        b.abs().max(1.0) * 1e-6
                    }
                };
                let v = |x: f64| {
                    if *integer { json!(x as i64) } else { json!(x) }
                };
                expect(patch(&n.path, v(*min)), true, &format!("{at} = minimum"));
                expect(patch(&n.path, v(*max)), true, &format!("{at} = maximum"));
                expect(
                    patch(&n.path, v(min - d(*min))),
                    false,
                    &format!("{at} < minimum"),
                );
                expect(
                    patch(&n.path, v(max + d(*max))),
                    false,
                    &format!("{at} > maximum"),
                );
                expect(
                    patch(&n.path, json!("1")),
                    false,
                    &format!("{at}: a string"),
                );
            }
            Kind::Text => {
                expect(patch(&n.path, json!("x")), true, &format!("{at}: a string"));
                expect(patch(&n.path, json!(1)), false, &format!("{at}: a number"));
            }
            Kind::Flag => {
                expect(
                    patch(&n.path, json!(true)),
                    true,
                    &format!("{at}: a boolean"),
                );
                expect(
                    patch(&n.path, json!("x")),
                    false,
                    &format!("{at}: a string"),
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // And no field of the snapshot is missing from the document: a state with every key the
    // document states comes back from the server with exactly those keys.
    let all = full(&doc, what_if);
    let back = server(&all).unwrap_or_else(|e| panic!("a full state is refused: {e}"));
    let mut stated = BTreeSet::new();
    keys(&all, "", &mut stated);
    stated.remove("others_busy");
    stated.remove("extra_busy_cores");
    let mut fields = BTreeSet::new();
    keys(
        &serde_json::to_value(&*back).expect("a snapshot serialises"),
        "",
        &mut fields,
    );
    assert_eq!(
        fields.difference(&stated).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "fields of the snapshot the document does not state"
    );
    assert_eq!(
        stated.difference(&fields).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys the document states that are no field of the snapshot"
    );
}
