//! The OpenAPI document of the HTTP API (`openapi.yaml` beside this file), served at
//! `/v1/openapi.yaml`, and a reader of its operations for the tests that hold it to the routes.

pub const DOCUMENT: &str = include_str!("openapi.yaml");

/// The bounds that belong to this daemon rather than to the API: a board's cores, a configured
/// batch limit. The document marks each with a comment on its line; [`for_daemon`] states them.
const BOARD_CORES: &str = "maximum: 1024 # board cores";
const MAX_BATCH: &str = "maxItems: 1000 # limits.max_batch";

/// The document as this daemon serves it: the thread bound of a prediction is its board's cores
/// (when its profile is loaded) and a batch's bound its configured `limits.max_batch`, so that
/// a client (or a fuzzer) reading it knows what this daemon accepts. Text substitution on the
/// marked lines, since the document is otherwise served as written.
pub fn for_daemon(board_cores: Option<usize>, max_batch: usize) -> String {
    let mut doc = DOCUMENT.replace(
        MAX_BATCH,
        &format!("maxItems: {max_batch} # limits.max_batch"),
    );
    if let Some(n) = board_cores {
        doc = doc.replace(BOARD_CORES, &format!("maximum: {n} # board cores"));
    }
    doc
}

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
    fn the_served_document_states_this_daemons_bounds() {
        assert!(super::DOCUMENT.contains(super::BOARD_CORES));
        assert!(super::DOCUMENT.contains(super::MAX_BATCH));
        let d = super::for_daemon(Some(6), 200);
        assert!(d.contains("maximum: 6 # board cores"));
        assert!(d.contains("maxItems: 200 # limits.max_batch"));
        assert!(!d.contains(super::BOARD_CORES) && !d.contains(super::MAX_BATCH));
        // Before the profile is loaded the general bound stays.
        assert!(super::for_daemon(None, 1000).contains(super::BOARD_CORES));
    }

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
