//! The stage order of `src/`: every file belongs to the stage named by its top module, and may use
//! only its own stage and the stages below it; the files inside one stage use each other without
//! cycles. `src/lib.rs` documents the order; [`ORDER`] is the same list, ground floor first.
//!
//! What counts as a use: every path that starts with `crate::`, `super::` or `self::`, and, in a
//! file that declares child modules (`mod x;`), every path that starts with a child's name — in
//! `use` trees (groups expanded) and in code alike. A path goes to the file of the longest module
//! it names, so `crate::sense::Snapshot` is an arrow to `sense/mod.rs`, which re-exports it.
//! Comments, string literals and `#[cfg(test)]` items are left out: a unit test may reach up to
//! check a stage against what uses it, without the shipped library depending on it.
//!
//! Written by hand rather than with a Rust parser crate: the check needs paths and braces only,
//! and a tokenizer of a hundred lines keeps the test free of a heavy dev-dependency.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The stages, ground floor first (see `src/lib.rs` for what each holds).
const ORDER: &[&str] = &[
    "util",
    "model",
    "kernels",
    "profile",
    "runtime",
    "workload",
    "sense",
    "predict",
    "plan",
    "calibrate",
    "eval",
    "config",
    "serve",
    "cli",
];

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    /// `::`
    Path,
}

/// Source text without comments, string and character literals (each replaced by a space).
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let at = |j: usize| c.get(j).copied().unwrap_or('\0');
        if at(i) == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if (at(i) == 'r'
            && (at(i + 1) == '"' || (at(i + 1) == '#' && (at(i + 2) == '"' || at(i + 2) == '#'))))
            && !c[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // Raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push(' ');
        } else if at(i) == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if at(i) == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A character literal ('x', '\n', '\u{1F600}'); a lifetime ('a) has no closing quote.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = strip(src).chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_alphabetic() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::Path);
            i += 2;
        } else {
            if !c[i].is_whitespace() {
                out.push(Tok::Punct(c[i]));
            }
            i += 1;
        }
    }
    out
}

/// The tokens without `#[cfg(test)]` items (the attribute, any attributes after it, and the item up
/// to its `;` or the end of its braces).
fn without_test_items(t: Vec<Tok>) -> Vec<Tok> {
    let is_cfg_test = |k: usize| {
        let want = [
            Tok::Punct('#'),
            Tok::Punct('['),
            Tok::Ident("cfg".into()),
            Tok::Punct('('),
            Tok::Ident("test".into()),
            Tok::Punct(')'),
            Tok::Punct(']'),
        ];
        t.get(k..k + want.len()) == Some(&want[..])
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if !is_cfg_test(i) {
            out.push(t[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        let mut depth = 0i32;
        while i < t.len() {
            match t[i] {
                Tok::Punct('{') | Tok::Punct('[') | Tok::Punct('(') => depth += 1,
                Tok::Punct('}') | Tok::Punct(']') | Tok::Punct(')') => {
                    depth -= 1;
                    if depth == 0 && t[i] == Tok::Punct('}') {
                        i += 1;
                        break;
                    }
                }
                Tok::Punct(';') if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// A path named by a `use` tree, and the name it brings into scope (its alias or last segment).
struct UsePath {
    path: Vec<String>,
    name: Option<String>,
}

/// Expands the `use` tree starting at `t[*i]` (after `use`) into full paths, with `prefix` before
/// each; stops after the tree (at `,`, `}` or `;`, not consumed).
fn use_tree(t: &[Tok], i: &mut usize, prefix: &[String], out: &mut Vec<UsePath>) {
    let mut path = prefix.to_vec();
    // `{self, …}` names the prefix itself.
    let mut itself = false;
    let mut alias = None;
    loop {
        match t.get(*i) {
            Some(Tok::Ident(s)) if s == "self" && !path.is_empty() => {
                itself = true;
                *i += 1;
            }
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                *i += 1;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    use_tree(t, i, &path, out);
                    match t.get(*i) {
                        Some(Tok::Punct(',')) => *i += 1,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    if t.get(*i) == Some(&Tok::Punct('}')) {
                        *i += 1;
                        return;
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                // A glob brings no one name into scope.
                *i += 1;
                alias = Some(String::new());
            }
            _ => {}
        }
        match t.get(*i) {
            Some(Tok::Path) => *i += 1,
            Some(Tok::Ident(s)) if s == "as" => {
                if let Some(Tok::Ident(a)) = t.get(*i + 1) {
                    alias = Some(a.clone());
                }
                *i += 2;
                break;
            }
            _ => break,
        }
    }
    if path.len() > prefix.len() || itself {
        let name = match alias {
            Some(a) if a.is_empty() => None,
            Some(a) => Some(a),
            None => path.last().cloned(),
        };
        out.push(UsePath { path, name });
    }
}

/// What a file names: every path (`use` trees expanded, and `a::b::c` runs in code), and what it
/// re-exports (`pub use`: the name and the path it stands for).
struct Names {
    paths: Vec<Vec<String>>,
    reexports: BTreeMap<String, Vec<String>>,
}

fn names(t: &[Tok]) -> Names {
    let mut out = Names {
        paths: Vec::new(),
        reexports: BTreeMap::new(),
    };
    let ident = |k: usize, w: &str| matches!(t.get(k), Some(Tok::Ident(s)) if s == w);
    let mut i = 0;
    while i < t.len() {
        if ident(i, "use") {
            // `pub use`, `pub(crate) use`, `pub(super) use`
            let public = (i >= 1 && ident(i - 1, "pub"))
                || (i >= 4 && t[i - 1] == Tok::Punct(')') && ident(i - 4, "pub"));
            i += 1;
            if t.get(i) == Some(&Tok::Path) {
                i += 1;
            }
            let mut found = Vec::new();
            use_tree(t, &mut i, &[], &mut found);
            for u in found {
                if let (true, Some(n)) = (public, &u.name) {
                    out.reexports.insert(n.clone(), u.path.clone());
                }
                out.paths.push(u.path);
            }
            continue;
        }
        let preceded_by_path = i > 0 && t[i - 1] == Tok::Path;
        if let (Tok::Ident(first), false) = (&t[i], preceded_by_path) {
            let mut path = vec![first.clone()];
            let mut j = i + 1;
            while t.get(j) == Some(&Tok::Path) {
                match t.get(j + 1) {
                    Some(Tok::Ident(s)) => {
                        path.push(s.clone());
                        j += 2;
                    }
                    _ => break,
                }
            }
            if path.len() > 1 {
                out.paths.push(path);
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Child modules a file declares without a body (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn child_modules(t: &[Tok]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for w in t.windows(3) {
        if let [Tok::Ident(m), Tok::Ident(name), Tok::Punct(';')] = w
            && m == "mod"
        {
            out.insert(name.clone());
        }
    }
    out
}

/// The module path of a file under `src/` (`sense/mod.rs` → [sense], `util/clock.rs` → [util, clock]).
fn module_of(file: &str) -> Vec<String> {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    if stem == "lib" {
        return Vec::new();
    }
    stem.split('/').map(str::to_string).collect()
}

/// One arrow: from file, to file, and the path that made it.
#[derive(Debug)]
struct Arrow {
    from: String,
    to: String,
    path: String,
}

struct FileNames {
    module: Vec<String>,
    children: BTreeSet<String>,
    names: Names,
}

struct Crate {
    modules: BTreeMap<Vec<String>, String>,
    files: BTreeMap<String, FileNames>,
}

impl Crate {
    fn new(files: &[(String, String)]) -> Crate {
        let mut c = Crate {
            modules: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        for (f, src) in files {
            let toks = without_test_items(tokens(src));
            c.modules.insert(module_of(f), f.clone());
            c.files.insert(
                f.clone(),
                FileNames {
                    module: module_of(f),
                    children: child_modules(&toks),
                    names: names(&toks),
                },
            );
        }
        c
    }

    /// The file that defines what `path`, named in `file`, stands for: the longest module it names,
    /// or, where that module only re-exports the item, the file the re-export points to. None: the
    /// path is not into this crate (`std::…`, a local, another crate).
    fn resolve(&self, file: &str, path: &[String], depth: usize) -> Option<&str> {
        let here = self.files.get(file)?;
        let (mut base, rest): (Vec<String>, &[String]) = match path[0].as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (here.module.clone(), &path[1..]),
            "super" => {
                let mut b = here.module.clone();
                let mut k = 0;
                while path.get(k).map(String::as_str) == Some("super") {
                    b.pop();
                    k += 1;
                }
                (b, &path[k..])
            }
            c if here.children.contains(c) => (here.module.clone(), path),
            _ => return None,
        };
        for seg in rest {
            base.push(seg.clone());
            if self.modules.contains_key(&base) {
                continue;
            }
            base.pop();
            let owner = self.modules.get(&base)?;
            let re = self.files.get(owner)?.names.reexports.get(seg);
            return match re {
                Some(p) if depth < 8 => self.resolve(owner, p, depth + 1).or(Some(owner.as_str())),
                _ => Some(owner.as_str()),
            };
        }
        self.modules.get(&base).map(String::as_str)
    }
}

/// Arrows between the files of a crate, given as (path under `src/`, source) pairs.
fn arrows(files: &[(String, String)]) -> Vec<Arrow> {
    let c = Crate::new(files);
    let mut out = Vec::new();
    for (file, f) in &c.files {
        for p in &f.names.paths {
            if let Some(to) = c.resolve(file, p, 0)
                && to != file
            {
                out.push(Arrow {
                    from: file.clone(),
                    to: to.to_string(),
                    path: p.join("::"),
                });
            }
        }
    }
    out
}

/// Strongly connected components of more than one node (Tarjan's algorithm).
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    struct State<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.next.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for (a, b) in edges {
        s.next.entry(a.as_str()).or_default().push(b.as_str());
        s.next.entry(b.as_str()).or_default();
    }
    let nodes: Vec<&str> = s.next.keys().copied().collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Everything wrong with a crate's imports against `order` (ground floor first), one line each.
fn check(order: &[&str], files: &[(String, String)]) -> Vec<String> {
    let rank = |stage: &str| order.iter().position(|s| *s == stage);
    let stage_of = |file: &str| module_of(file).first().cloned();
    let mut problems = Vec::new();
    for (f, _) in files {
        if let Some(stage) = stage_of(f)
            && rank(&stage).is_none()
        {
            problems.push(format!(
                "{f}: stage `{stage}` is not in the order (add it to ORDER and src/lib.rs)"
            ));
        }
    }
    let mut file_edges = BTreeSet::new();
    let mut stage_edges = BTreeSet::new();
    for a in arrows(files) {
        let (Some(from), Some(to)) = (stage_of(&a.from), stage_of(&a.to)) else {
            continue;
        };
        if from == to {
            // A module uses its parent's items (`super::Kernel`) while the parent calls into it:
            // that is one module tree, not a cycle. Cycles between siblings, or through another
            // folder's module, count.
            let parent = module_of(&a.from).split_last().map(|(_, p)| p.to_vec());
            if parent != Some(module_of(&a.to)) {
                file_edges.insert((a.from.clone(), a.to.clone()));
            }
        } else {
            if let (Some(rf), Some(rt)) = (rank(&from), rank(&to))
                && rt > rf
            {
                problems.push(format!(
                    "upward arrow {from} → {to}: src/{} uses `{}` (src/{})",
                    a.from, a.path, a.to
                ));
            }
            stage_edges.insert((from, to));
        }
    }
    // One line per arrow, however often a file names the same path.
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    for c in cycles(&stage_edges) {
        problems.push(format!("cycle between stages: {}", c.join(", ")));
    }
    for c in cycles(&file_edges) {
        problems.push(format!("cycle between files: src/{}", c.join(", src/")));
    }
    problems
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            sources(&p, root, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            // main.rs is the binary, a crate of its own that uses the library by name.
            if rel != "main.rs" {
                out.push((rel, std::fs::read_to_string(&p)?));
            }
        }
    }
    Ok(())
}

#[test]
fn the_source_follows_the_stage_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files).expect("src/ is readable");
    assert!(files.len() > 50, "only {} files under src/", files.len());
    // Guards against a check that reads nothing: the real crate has arrows between stages.
    assert!(arrows(&files).len() > 100);
    let problems = check(ORDER, &files);
    assert!(
        problems.is_empty(),
        "{} problems with the stage order:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn crate_of(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(f, s)| (f.to_string(), s.to_string()))
        .collect()
}

const TINY: &[&str] = &["util", "model", "kernels", "calibrate"];

#[test]
fn an_upward_arrow_and_the_cycle_it_makes_are_caught() {
    let files = crate_of(&[
        ("model/mod.rs", "pub mod graph;\npub use graph::Graph;"),
        (
            "model/graph.rs",
            "use crate::kernels::Kernel;\npub struct Graph;",
        ),
        (
            "kernels/mod.rs",
            "use crate::{model::Graph, util};\npub struct Kernel;",
        ),
        ("util.rs", ""),
    ]);
    let p = check(TINY, &files);
    assert!(
        p.iter()
            .any(|l| l.starts_with("upward arrow model → kernels")
                && l.contains("src/model/graph.rs uses `crate::kernels::Kernel`")),
        "{p:?}"
    );
    assert!(
        p.contains(&"cycle between stages: kernels, model".to_string()),
        "{p:?}"
    );
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn a_cycle_between_files_of_one_stage_is_caught() {
    let files = crate_of(&[
        ("calibrate/mod.rs", "pub mod run;\npub mod compose;"),
        (
            "calibrate/run.rs",
            "fn f() { super::compose::fit(); }\npub fn target() {}",
        ),
        (
            "calibrate/compose.rs",
            "use super::{run::target, self};\npub fn fit() {}",
        ),
    ]);
    let p = check(TINY, &files);
    assert_eq!(
        p,
        vec!["cycle between files: src/calibrate/compose.rs, src/calibrate/run.rs".to_string()]
    );
}

#[test]
fn downward_arrows_tests_comments_and_strings_pass() {
    let files = crate_of(&[
        (
            "model/mod.rs",
            "//! See [`crate::kernels`].\nmod graph;\nfn f() { let s = \"crate::calibrate::x\"; let c = '\"'; graph::g(); }\n\
             #[cfg(test)]\nmod tests {\n    use crate::kernels::Kernel;\n    fn t() { crate::calibrate::x(); }\n}\n\
             /* crate::kernels::Kernel */ fn h<'a>(x: &'a str) -> &'a str { x }",
        ),
        ("model/graph.rs", "pub fn g() { crate::util::now(); }"),
        ("kernels/mod.rs", "use crate::model::{self, graph::g};"),
        ("calibrate/mod.rs", "use crate::{kernels, model::graph};"),
        ("util.rs", ""),
    ]);
    assert_eq!(check(TINY, &files), Vec::<String>::new());
    assert_eq!(arrows(&files).len(), 6, "{:?}", arrows(&files));
}

#[test]
fn a_stage_outside_the_order_is_named() {
    let files = crate_of(&[
        ("extra/mod.rs", "use crate::model::Graph;"),
        ("model/mod.rs", ""),
    ]);
    let p = check(TINY, &files);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("stage `extra` is not in the order"), "{p:?}");
}
