//! The OpenAPI document of the HTTP API (`openapi.yaml` beside this file), served at
//! `/v1/openapi.yaml`, and a reader of its operations for the tests that hold it to the routes.

pub const DOCUMENT: &str = include_str!("openapi.yaml");

/// The (METHOD, path) pairs under `paths:`, read by indentation: paths at two spaces, methods at
/// four. Enough for this document, which is written that way; not a YAML parser.
pub fn operations(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in doc.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let key = line.trim().strip_suffix(':');
        match (indent, key) {
            (0, Some("paths")) => in_paths = true,
            (0, _) => in_paths = false,
            (2, Some(p)) if in_paths => path = Some(p.trim_matches(['"', '\'']).to_string()),
            (4, Some(m)) if in_paths => {
                const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];
                if let (Some(p), true) = (&path, METHODS.contains(&m)) {
                    out.push((m.to_ascii_uppercase(), p.clone()));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn operations_are_read_off_the_paths_section() {
        let doc = "openapi: 3.0.3\npaths:\n  /a:\n    get:\n      summary: x\n    post:\n      x: 1\n  /b/{id}:\n    get:\ncomponents:\n  /c:\n    get:\n";
        assert_eq!(
            super::operations(doc),
            vec![
                ("GET".to_string(), "/a".to_string()),
                ("POST".into(), "/a".into()),
                ("GET".into(), "/b/{id}".into())
            ]
        );
    }
}
