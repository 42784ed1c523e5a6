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
