//! No import cycles between the top-level modules of the library, the lab
//! crate, the bench harness and xtask, nor between the files of one module (siblings; a
//! parent's `mod.rs` may use its children and they it): the layout follows
//! the data flow, and a module that calls back up into one that uses it is
//! where that erodes first. Reads the sources (test code excluded); no root
//! needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A file's code without its unit tests; `None` for test-only files, which
/// may reach anywhere.
fn code_of(file: &Path) -> Option<String> {
    let name = file.file_name().unwrap().to_string_lossy();
    if ["tests.rs", "scenarios.rs", "sim.rs"].contains(&&*name) {
        return None;
    }
    let text = std::fs::read_to_string(file).unwrap();
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    // Comments (doc links included) import nothing.
    let lines: Vec<&str> = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    Some(lines.join("\n"))
}

/// The first path segment of every name that follows `prefix` in `code`:
/// `prefix` + `a::X` gives `a`, `prefix` + `{a, b::X}` gives `a` and `b`.
fn named_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices(prefix) {
        // `super::super::x` is not `super::x`.
        if prefix.starts_with("super::") && code[..i].ends_with("super::") {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.insert(ident(&item));
        } else {
            names.insert(ident(rest));
        }
    }
    names.remove("");
    names
}

/// For every directory module under `src`: its children (files and
/// subdirectories, `mod.rs` aside) → the siblings each names, by
/// `super::x` or by its full `crate::…::x` path.
fn sibling_graphs(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut graphs = BTreeMap::new();
    let files = rust_files(src);
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .filter(|d| d != src)
        .collect();
    for dir in dirs {
        let module: Vec<String> = dir
            .strip_prefix(src)
            .unwrap()
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        let full = format!("crate::{}::", module.join("::"));
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            if stem == "mod" || !(path.is_dir() || path.extension().is_some_and(|e| e == "rs")) {
                continue;
            }
            edges.entry(stem.clone()).or_default();
            // A child file's `super::` is this module; a file inside a
            // child directory reaches it by one `super::` more (its
            // `mod.rs` by one).
            let inside: Vec<(PathBuf, Option<&str>)> = if path.is_dir() {
                rust_files(&path)
                    .into_iter()
                    .map(|f| {
                        // Deeper files reach siblings by their full path.
                        let up = (f.parent() == Some(path.as_path())).then(|| {
                            if f.file_name().is_some_and(|n| n == "mod.rs") {
                                "super::"
                            } else {
                                "super::super::"
                            }
                        });
                        (f, up)
                    })
                    .collect()
            } else {
                vec![(path.clone(), Some("super::"))]
            };
            for (file, up) in inside {
                let Some(code) = code_of(&file) else { continue };
                let by_super = up.map(|up| named_after(&code, up)).unwrap_or_default();
                let named = by_super.into_iter().chain(named_after(&code, &full));
                for to in named {
                    if to != stem {
                        edges.get_mut(&stem).unwrap().insert(to);
                    }
                }
            }
        }
        let names: BTreeSet<String> = edges.keys().cloned().collect();
        for to in edges.values_mut() {
            to.retain(|t| names.contains(t));
        }
        graphs.insert(module.join("::"), edges);
    }
    graphs
}

/// Top-level module → the top-level modules it names as `crate::<m>`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(src);
    let top = |path: &Path| -> String {
        let rel = path.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| top(f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let from = top(file);
        if !modules.contains(&from) {
            continue;
        }
        let Some(code) = code_of(file) else { continue };
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let to: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if to != from && modules.contains(&to) {
                edges.get_mut(&from).unwrap().insert(to);
            }
        }
    }
    edges
}

fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in &edges[node] {
            if let Some(c) = visit(next, edges, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut done, &mut Vec::new()))
}

/// The library, the lab crate, the bench harness and xtask.
fn sources(root: &Path) -> [PathBuf; 4] {
    [
        root.join("src"),
        root.join("../traceroute-lab/src"),
        root.join("../traceroute-bench/src"),
        root.join("../xtask/src"),
    ]
}

#[test]
fn top_level_modules_import_without_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in sources(root) {
        let edges = graph(&src);
        assert!(edges.len() > 5, "read the modules of {}", src.display());
        assert_eq!(cycle(&edges), None, "{}: {edges:#?}", src.display());
    }
    // The checker finds a cycle when there is one.
    let mut edges = graph(&root.join("src"));
    edges.get_mut("clock").unwrap().insert("trace".into());
    assert!(cycle(&edges).is_some());
}

#[test]
fn files_of_a_module_import_without_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in sources(root) {
        for (module, edges) in sibling_graphs(&src) {
            assert_eq!(
                cycle(&edges),
                None,
                "{}: {module}: {edges:#?}",
                src.display()
            );
        }
    }
    // Edges are read where they are: capture's hub uses its ebpf file.
    let library = sibling_graphs(&root.join("src"));
    assert!(
        library["capture"]["hub"].contains("ebpf"),
        "{:#?}",
        library["capture"]
    );
}

/// A loop planted in a module's files, by `super::` in one and by a grouped
/// `crate::` path in the other, is found.
#[test]
fn a_planted_loop_between_two_files_is_found() {
    let src = std::env::temp_dir().join(format!("module-cycles-{}", std::process::id()));
    // Module `stage`: a uses b, b uses c and deeper, deeper uses c; and c
    // as given.
    let plant = |c: &str| -> BTreeMap<String, BTreeSet<String>> {
        let module = src.join("stage");
        std::fs::create_dir_all(module.join("deeper")).unwrap();
        for (name, text) in [
            (
                "mod.rs",
                "mod a;\nmod b;\nmod c;\nmod deeper;\npub use a::A;\n",
            ),
            ("a.rs", "use super::b::B;\npub struct A(B);\n"),
            ("b.rs", "use crate::stage::{deeper::D, c};\npub struct B;\n"),
            ("c.rs", c),
            ("deeper/mod.rs", "use super::c;\npub struct D;\n"),
        ] {
            std::fs::write(module.join(name), text).unwrap();
        }
        let graphs = sibling_graphs(&src);
        std::fs::remove_dir_all(&src).unwrap();
        graphs["stage"].clone()
    };
    let clean = plant("pub fn c() {}\n");
    assert_eq!(cycle(&clean), None, "no loop yet: {clean:#?}");
    assert_eq!(clean["b"], BTreeSet::from(["c".into(), "deeper".into()]));
    assert_eq!(clean["deeper"], BTreeSet::from(["c".to_string()]));
    // Now c uses a, which uses b, which uses c.
    let looped = plant("pub fn c() -> super::a::A {\n    todo!()\n}\n");
    let mut expected = clean.clone();
    expected.get_mut("c").unwrap().insert("a".into());
    assert_eq!(looped, expected);
    let found = cycle(&looped).expect("the planted loop is found");
    assert!(
        found.contains(&"a".to_string()) && found.contains(&"c".to_string()),
        "{found:?}"
    );
}
