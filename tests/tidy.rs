//! Tidy: the architecture invariants of ARCHITECTURE.md, checked by reading
//! the source tree (in the spirit of rust-analyzer's `tidy.rs`), so that a
//! change that breaks one fails `cargo test` instead of rotting quietly.
//!
//! What is checked: which top-level modules may import `store`, `rusqlite`
//! and the concrete auth plug-ins (`crate::auth`); that controllers, the
//! scheduler and the agent never import the store; that the node
//! subsystems (`hostnet`, `overlay`, `proxy`, `dns`, `ingress`, `svccache`)
//! and the shared helpers (`k8s`, `cidr`) never import the modules above
//! them; that no two top-level modules import each other, even through a
//! longer circle; that no source file is over 800 lines; that the fakes and
//! `apiserver/testing.rs` are compiled for tests only (not into the release
//! binary); and that `anyhow` is used, if at all, at the binary's edge only.
//!
//! An import is any `crate::NAME` path outside a comment, the names inside
//! `crate::{…}`, and `super::` chains that climb to the crate root. The test
//! reads files only; it builds no part of rk3s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a source file may be.
const MAX_LINES: usize = 800;

/// Top-level modules that may import `crate::store`.
const STORE_USERS: &[&str] = &["apiserver", "auth", "server"];
/// Top-level modules that may name the concrete auth plug-ins.
const AUTH_USERS: &[&str] = &["server"];
/// Node subsystems: the agent wires them, they talk to the API through
/// kube-rs only.
const NODE_SUBSYSTEMS: &[&str] = &["hostnet", "overlay", "proxy", "dns", "ingress", "svccache", "storage"];
/// Shared lower helpers.
const HELPERS: &[&str] = &["k8s", "cidr", "quantity"];
/// What neither of the two groups above may import.
const UPPER: &[&str] = &[
    "agent",
    "server",
    "apiserver",
    "store",
    "auth",
    "controllers",
    "scheduler",
    "cli",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// One `crate::` import: the file, its line and the top-level module named.
#[derive(Clone, Debug)]
struct Import {
    file: String,
    line: usize,
    target: String,
}

/// The module path of `src/…/file.rs` below the crate root (`a/b.rs` and
/// `a/b/mod.rs` are both `[a, b]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level module names inside `{…}` at depth one (`a, b::c, d::{e}`).
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expect = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect = true,
            c if depth == 1 && expect && !c.is_whitespace() => {
                let id = ident_at(&s[i..]);
                if !id.is_empty() && id != "self" {
                    heads.push(id.to_string());
                }
                expect = false;
            }
            _ => {}
        }
    }
    heads
}

/// `line` without its `//` comment (a `//` inside a string literal stays).
fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    let mut escaped = false;
    let b = line.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            _ if escaped => escaped = false,
            b'\\' if in_str => escaped = true,
            b'"' => in_str = !in_str,
            b'/' if !in_str && b.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The imports of one file, comments left out.
fn imports(file: &Path, rel: &Path, text: &str) -> Vec<Import> {
    let depth = module_path(rel).len();
    let name = file
        .strip_prefix(root())
        .unwrap_or(file)
        .display()
        .to_string();
    let mut out = Vec::new();
    // Keep line numbers: blank out comment lines, join the rest.
    let lines: Vec<&str> = text.lines().collect();
    for (n, raw) in lines.iter().enumerate() {
        let code = strip_comment(raw);
        let mut push = |target: &str| {
            if !target.is_empty() {
                out.push(Import {
                    file: name.clone(),
                    line: n + 1,
                    target: target.to_string(),
                })
            }
        };
        for (i, _) in code.match_indices("crate::") {
            if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue; // `rk3s_crate::`, never ours
            }
            let rest = &code[i + "crate::".len()..];
            if rest.starts_with('{') {
                // A group may span lines: read on until it closes.
                let tail: String = std::iter::once(rest.to_string())
                    .chain(lines[n + 1..].iter().map(|l| l.to_string()))
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n");
                for h in group_heads(&tail) {
                    push(&h);
                }
            } else {
                push(ident_at(rest));
            }
        }
        // `super::super::x` from a module `depth` deep reaches the root.
        for (i, _) in code.match_indices("super::") {
            if i > 0 && code[..i].ends_with("super::") {
                continue;
            }
            let mut rest = &code[i..];
            let mut ups = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                ups += 1;
                rest = r;
            }
            if depth > 0 && ups >= depth {
                push(ident_at(rest));
            }
        }
    }
    out
}

struct Tree {
    /// `(top-level module, import)` for every file under `src/`.
    imports: Vec<(String, Import)>,
    /// Every `.rs` file with its line count.
    sizes: Vec<(String, usize)>,
    /// Files that mention `rusqlite` outside comments.
    rusqlite: Vec<(String, String)>,
    modules: BTreeSet<String>,
}

fn read_tree() -> Tree {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .expect("src/ is readable")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.trim_end_matches(".rs").to_string();
            (e.path().is_dir() || name.ends_with(".rs")).then_some(stem)
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut tree = Tree {
        imports: Vec::new(),
        sizes: Vec::new(),
        rusqlite: Vec::new(),
        modules,
    };
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let text = std::fs::read_to_string(f).expect("a readable source file");
        let top = module_path(rel).first().cloned().unwrap_or_default();
        if top.is_empty() {
            continue; // lib.rs and main.rs: the crate root and the binary
        }
        for i in imports(f, rel, &text) {
            if i.target != top && tree.modules.contains(&i.target) {
                tree.imports.push((top.clone(), i));
            }
        }
        for line in text.lines() {
            let code = line.trim_start();
            if !code.starts_with("//") && code.contains("rusqlite") {
                tree.rusqlite.push((top.clone(), rel.display().to_string()));
                break;
            }
        }
    }
    let mut all = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root().join(dir), &mut all);
    }
    for f in all {
        let n = std::fs::read_to_string(&f)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        let name = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
        tree.sizes.push((name, n));
    }
    tree
}

fn report(what: &str, bad: Vec<String>) {
    assert!(
        bad.is_empty(),
        "{what} (see ARCHITECTURE.md):\n  {}",
        bad.join("\n  ")
    );
}

fn offending(tree: &Tree, target: &str, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    tree.imports
        .iter()
        .filter(|(from, i)| i.target == target && !allowed(from))
        .map(|(from, i)| format!("{}:{}: `{from}` imports `crate::{target}`", i.file, i.line))
        .collect()
}

#[test]
fn only_the_api_server_side_imports_the_store() {
    let tree = read_tree();
    report(
        "only apiserver, auth and server may import `crate::store`; controllers, the scheduler and the agent talk to the API",
        offending(&tree, "store", |from| STORE_USERS.contains(&from)),
    );
}

#[test]
fn only_the_store_uses_sqlite() {
    let tree = read_tree();
    let bad = tree
        .rusqlite
        .iter()
        .filter(|(top, _)| top != "store")
        .map(|(top, f)| format!("src/{f}: `{top}` names rusqlite"))
        .collect();
    report("only `store` opens SQLite", bad);
}

#[test]
fn plug_ins_are_wired_in_assemble_only() {
    let tree = read_tree();
    report(
        "the concrete auth plug-ins (`crate::auth`) are named by `server::assemble` only; handlers go through `apiserver::auth`'s seam",
        offending(&tree, "auth", |from| AUTH_USERS.contains(&from)),
    );
}

#[test]
fn node_subsystems_and_helpers_point_down() {
    let tree = read_tree();
    let mut bad = Vec::new();
    for (from, i) in &tree.imports {
        let lower = NODE_SUBSYSTEMS.contains(&from.as_str()) || HELPERS.contains(&from.as_str());
        if lower && UPPER.contains(&i.target.as_str()) {
            bad.push(format!(
                "{}:{}: `{from}` imports `crate::{}`",
                i.file, i.line, i.target
            ));
        }
    }
    report(
        "node subsystems and shared helpers never import agent, server, apiserver, store or the control plane",
        bad,
    );
}

/// The top-level import graph: `from → {to → first import}`.
fn graph(tree: &Tree) -> BTreeMap<String, BTreeMap<String, Import>> {
    let mut g: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
    for (from, i) in &tree.imports {
        g.entry(from.clone())
            .or_default()
            .entry(i.target.clone())
            .or_insert_with(|| i.clone());
    }
    g
}

/// A circle through `start`, if any (depth-first search).
fn circle_from(g: &BTreeMap<String, BTreeMap<String, Import>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeMap<String, Import>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(g, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_circle_between_top_level_modules() {
    let tree = read_tree();
    let g = graph(&tree);
    let mut bad = Vec::new();
    let mut reported = BTreeSet::new();
    for m in &tree.modules {
        let Some(path) = circle_from(&g, m) else {
            continue;
        };
        let mut key = path.clone();
        key.sort();
        if !reported.insert(key) {
            continue;
        }
        let mut steps = Vec::new();
        for (k, from) in path.iter().enumerate() {
            let to = &path[(k + 1) % path.len()];
            let i = &g[from][to];
            steps.push(format!("{from} → {to} ({}:{})", i.file, i.line));
        }
        bad.push(steps.join(", "));
    }
    report("top-level modules import each other in a circle", bad);
}

#[test]
fn no_file_is_too_long() {
    let tree = read_tree();
    let bad = tree
        .sizes
        .iter()
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(f, n)| format!("{f}: {n} lines (at most {MAX_LINES}: split it by concern)"))
        .collect();
    report("source files are small enough to read in one sitting", bad);
}

/// Whether the item declared at `lines[at]` is compiled for tests only: a
/// `#[cfg(test)]` among the attributes right above it, or an enclosing
/// inline module (any less indented `mod x {` above it) that has one.
fn test_only(lines: &[&str], at: usize) -> bool {
    let gated = |decl: usize| {
        lines[..decl]
            .iter()
            .rev()
            .map(|l| l.trim())
            .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
            .any(|l| l.starts_with("#[cfg(test)]"))
    };
    if gated(at) {
        return true;
    }
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut depth = indent(lines[at]);
    for k in (0..at).rev() {
        let l = lines[k];
        let t = l.trim_start();
        if indent(l) < depth && !t.is_empty() {
            depth = indent(l);
            if (t.starts_with("mod ") || t.starts_with("pub mod ") || t.starts_with("pub(crate) mod "))
                && t.ends_with('{')
                && gated(k)
            {
                return true;
            }
        }
    }
    false
}

/// The name after `struct ` or `mod ` on a declaration line.
fn declared(line: &str, keyword: &str) -> Option<String> {
    let t = line.trim_start();
    let t = t
        .strip_prefix("pub(crate) ")
        .or_else(|| t.strip_prefix("pub(super) "))
        .or_else(|| t.strip_prefix("pub "))
        .unwrap_or(t);
    Some(ident_at(t.strip_prefix(keyword)?).to_string())
}

/// The files of modules compiled for tests only: those a `#[cfg(test)]`
/// `mod x;` declares (at `x.rs`, `x/mod.rs` or its `#[path]`), and below.
fn test_only_files(files: &[(PathBuf, String)]) -> BTreeSet<PathBuf> {
    let mut gated = BTreeSet::new();
    for (f, text) in files {
        let lines: Vec<&str> = text.lines().collect();
        let name = f.file_name().unwrap().to_string_lossy();
        let dir = if name == "mod.rs" || name == "lib.rs" || name == "main.rs" {
            f.parent().unwrap().to_path_buf()
        } else {
            f.with_extension("")
        };
        for (k, line) in lines.iter().enumerate() {
            let t = line.trim();
            let Some(m) = declared(t, "mod ").filter(|_| t.ends_with(';')) else {
                continue;
            };
            if !test_only(&lines, k) {
                continue;
            }
            let path_attr = lines[..k]
                .iter()
                .rev()
                .map(|l| l.trim())
                .take_while(|l| l.starts_with("#["))
                .find_map(|l| l.strip_prefix("#[path = \"")?.strip_suffix("\"]"));
            match path_attr {
                Some(p) => {
                    gated.insert(f.parent().unwrap().join(p));
                }
                None => {
                    gated.insert(dir.join(format!("{m}.rs")));
                    gated.insert(dir.join(&m));
                }
            }
        }
    }
    gated
}

#[test]
fn fakes_and_test_servers_are_compiled_for_tests_only() {
    let src = root().join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(PathBuf, String)> = paths
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, text)
        })
        .collect();
    let gated = test_only_files(&files);
    let mut bad = Vec::new();
    for (f, text) in &files {
        if gated.iter().any(|g| f.starts_with(g)) {
            continue; // the whole file is a test-only module
        }
        let rel = f.strip_prefix(&src).unwrap().display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        for (k, line) in lines.iter().enumerate() {
            let fake_mod = declared(line, "mod ").is_some_and(|m| m == "fake" || m == "testing" || m == "fakes");
            let fake_struct = declared(line, "struct ").is_some_and(|n| n.starts_with("Fake"));
            if (fake_mod || fake_struct) && !test_only(&lines, k) {
                bad.push(format!("src/{rel}:{}: `{}` is not behind #[cfg(test)]", k + 1, line.trim()));
            }
        }
    }
    report("fakes and apiserver/testing.rs are compiled for tests only, never into the release binary", bad);
}

#[test]
fn anyhow_only_at_the_binary_edge() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let declared = manifest.lines().any(|l| l.trim_start().starts_with("anyhow"));
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut users = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if text.lines().any(|l| strip_comment(l).contains("anyhow")) {
            users.push(f.strip_prefix(&src).unwrap().display().to_string());
        }
    }
    let inside: Vec<String> = users
        .iter()
        .filter(|f| *f != "main.rs")
        .map(|f| format!("src/{f} uses anyhow (errors are thiserror enums per module)"))
        .collect();
    report("`anyhow` is for the binary's edge (src/main.rs) only", inside);
    assert!(
        !declared || !users.is_empty(),
        "Cargo.toml declares anyhow but nothing uses it: remove the dependency"
    );
}

#[test]
fn the_test_only_reader_sees_attributes_and_enclosing_modules() {
    let text = "#[cfg(test)]\npub mod fake;\npub mod real;\n#[cfg(test)]\nmod tests {\n    struct FakeX;\n}\nstruct FakeY;\n";
    let lines: Vec<&str> = text.lines().collect();
    assert!(test_only(&lines, 1));
    assert!(!test_only(&lines, 2));
    assert!(test_only(&lines, 5));
    assert!(!test_only(&lines, 7));
}

#[test]
fn the_import_reader_sees_groups_and_super_chains() {
    let rel = Path::new("controllers/cluster/x.rs");
    let text = "use crate::{config::A, k8s::{b, c}};\n// use crate::store;\nuse super::super::super::scheduler::f;\nlet u = \"https://x\"; // crate::auth\n";
    let got: Vec<String> = imports(&root().join("src").join(rel), rel, text)
        .into_iter()
        .map(|i| i.target)
        .collect();
    assert_eq!(got, ["config", "k8s", "scheduler"]);
}
