//! The library's layers point one way (README "Library layout", `src/lib.rs`): a module may
//! use modules of its own layer or of layers below, never above. Checked on the source text:
//! every `crate::NAME` path outside `#[cfg(test)]` modules, with NAME resolved through the
//! crate root's re-exports to the folder (layer) that holds it.

use std::collections::BTreeMap;
use std::path::Path;

/// Folder → layer (lower numbers are lower layers).
const LAYERS: &[(&str, u32)] = &[
    ("base", 1),
    ("formats", 2),
    ("predict", 3),
    ("build", 4),
    ("seal", 5),
    ("luks", 6),
];

/// Root name (as in `crate::NAME`) → layer, from the folder tree: `src/<folder>/<name>.rs`,
/// `src/<folder>/<name>/` (a module split into files), `src/<folder>/mod.rs` (NAME = folder).
fn names() -> BTreeMap<String, u32> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut m = BTreeMap::new();
    for (folder, layer) in LAYERS {
        m.insert(folder.to_string(), *layer);
        for e in std::fs::read_dir(src.join(folder)).unwrap() {
            let p = e.unwrap().path();
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            if stem != "mod" {
                m.insert(stem, *layer);
            }
        }
    }
    m
}

/// The `.rs` files of a layer folder with the module each belongs to: its stem, the folder
/// for `mod.rs`, and for files in a sub-folder that sub-folder (the module split into files).
fn files(folder: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(folder).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            let module = p.file_name().unwrap().to_string_lossy().into_owned();
            let mut stack = vec![p];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let f = e.unwrap().path();
                    if f.is_dir() {
                        stack.push(f);
                    } else if f.extension().is_some_and(|x| x == "rs") {
                        out.push((module.clone(), f));
                    }
                }
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push((module_name(&p), p));
        }
    }
    out
}

/// The code of a file: without its `#[cfg(test)] mod tests { ... }` (always last in our
/// files) and without comments (doc links may name any module).
fn code(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module name of a file: its stem, or its folder for `mod.rs`.
fn module_name(p: &Path) -> String {
    let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
    if stem == "mod" {
        p.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    } else {
        stem
    }
}

/// Every (module, `crate::NAME` it uses) in the layer folders.
fn edges() -> Vec<(String, std::path::PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for (folder, _) in LAYERS {
        for (module, p) in files(&src.join(folder)) {
            let body = code(&std::fs::read_to_string(&p).unwrap());
            for (i, _) in body.match_indices("crate::") {
                let name: String = body[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push((module.clone(), p.clone(), name));
            }
        }
    }
    out
}

#[test]
fn the_module_graph_has_no_cycle() {
    let mut graph: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let names = names();
    for (m, _, n) in edges() {
        if m != n && names.contains_key(&n) {
            graph.entry(m).or_default().insert(n);
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        g: &BTreeMap<String, std::collections::BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let i = path.iter().position(|p| p == n).unwrap_or(0);
                let mut c = path[i..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    if let Some(c) = find_cycle(&graph, visit) {
        panic!("import cycle: {}", c.join(" -> "));
    }
    assert!(graph.len() > 10, "{graph:?}");
    // The search does find a cycle when there is one (the old measure <-> uki edge).
    let mut with_cycle = graph.clone();
    with_cycle
        .entry("ukiread".into())
        .or_default()
        .insert("measure".into());
    assert!(find_cycle(&with_cycle, visit).is_some());
}

type Graph = BTreeMap<String, std::collections::BTreeSet<String>>;
type Visit = fn(&str, &Graph, &mut BTreeMap<String, u8>, &mut Vec<String>) -> Option<Vec<String>>;

fn find_cycle(g: &Graph, visit: Visit) -> Option<Vec<String>> {
    let mut state = BTreeMap::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut state, &mut Vec::new()))
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let names = names();
    let mut violations = Vec::new();
    let mut checked = 0;
    for (module, p, name) in edges() {
        // The module's layer: that of the layer folder it sits in (for a module split into
        // files, the folder above its own).
        let own = names[&module];
        checked += 1;
        match names.get(&name) {
            Some(l) if *l > own => {
                violations.push(format!("{}: crate::{name} (layer {l})", p.display()))
            }
            Some(_) => {}
            // Items re-exported at the root (e.g. DerShapeError).
            None => assert!(
                name.chars().next().is_some_and(|c| c.is_uppercase()),
                "{}: crate::{name} is not in any layer folder",
                p.display()
            ),
        }
    }
    assert!(checked > 50, "only {checked} crate:: paths found");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The negative control: the checker does see an upward import (this file's own text would
/// be one if it lived in `base/`).
#[test]
fn the_checker_sees_an_upward_path() {
    let names = names();
    assert_eq!(names.get("uki"), Some(&4));
    assert_eq!(names.get("hash"), Some(&1));
    assert_eq!(names.get("token"), Some(&6));
    assert!(names.get("measure") > names.get("ukiread"));
}
