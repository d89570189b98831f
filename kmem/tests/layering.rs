//! The core's layering, checked from its source text (as Linux's internal
//! headers say what one file may call in another, this says what one
//! module may import from another).
//!
//! - No import cycle between the core's top-level modules, except
//!   `page_alloc` with `vmscan`: direct reclaim runs inside the allocation
//!   slow path and reclaim frees pages, both ways, as in Linux. An import is
//!   any `crate::x` path outside comments and `#[cfg(test)]` code: `use`
//!   statements (with their brace groups) and paths written inline. A name
//!   the crate root re-exports counts as an import of the module that
//!   defines it. The one exception is [`kmem::Kmem`] itself: the machine is
//!   the composition root whose fields are every subsystem's state, and each
//!   subsystem names it to add its own `impl Kmem` block.
//! - No core source file above 1,000 lines.
//!
//! `cargo test -p kmem --test layering -- --nocapture` also prints which
//! subsystem calls which `Kmem` method of another: the cross-subsystem
//! calls that imports cannot show.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Import cycles allowed, each with Linux's reason.
const ALLOWED_CYCLES: &[&[&str]] = &[&["page_alloc", "vmscan"]];
/// The longest a core file may be.
const MAX_LINES: usize = 1000;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read kmem/src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`None` for `lib.rs`).
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src_dir()).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if first == "lib.rs" {
        None
    } else {
        Some(first.trim_end_matches(".rs").to_string())
    }
}

/// The text with comments, string literals and `#[cfg(test)]` items blanked.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('x' or '\n'); lifetimes have no closing quote.
            let end = b[i + 1..].iter().position(|&c| c == b'\'').unwrap_or(0);
            i += end + 2;
            out.push_str("' '");
        } else if b[i..].starts_with(b"#[cfg(test)]") {
            // Skip the attribute and the item it guards (to its `;` or its
            // closing brace).
            i += "#[cfg(test)]".len();
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    b';' if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The first path segment of every path that starts `crate::`, brace
/// groups of `use` statements included.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` in a macro, or part of a longer name
        }
        let tail = rest.trim_start();
        if let Some(group) = tail.strip_prefix('{') {
            // A brace group: its top-level entries' first segments.
            let mut depth = 1;
            let mut entry = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && c == ',') {
                    push_first(&mut names, &entry);
                    entry.clear();
                    if depth == 0 {
                        break;
                    }
                } else {
                    entry.push(c);
                }
            }
        } else {
            push_first(&mut names, tail);
        }
    }
    names
}

fn push_first(names: &mut Vec<String>, path: &str) {
    let first: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !first.is_empty() && first != "self" {
        names.push(first);
    }
}

/// `stmt` without its leading attributes (`#![no_std]`, `#[cfg(..)]`...).
fn strip_attributes(stmt: &str) -> &str {
    let mut s = stmt.trim();
    while s.starts_with('#') {
        let Some(end) = s.find(']') else { break };
        s = s[end + 1..].trim();
    }
    s
}

/// The root's modules and the module each root re-export comes from.
fn root_names() -> (BTreeSet<String>, BTreeMap<String, String>) {
    let lib = code_only(&fs::read_to_string(src_dir().join("lib.rs")).expect("lib.rs"));
    let mut modules = BTreeSet::new();
    let mut reexports = BTreeMap::new();
    for stmt in lib.split(';') {
        let s = strip_attributes(stmt);
        if let Some(m) = s.strip_prefix("pub mod ") {
            modules.insert(m.trim().to_string());
        } else if let Some(u) = s.strip_prefix("pub use ") {
            let (module, items) = u.split_once("::").expect("pub use a::b");
            let items = items.trim().trim_start_matches('{').trim_end_matches('}');
            for item in items.split(',') {
                let name = item.trim();
                if !name.is_empty() {
                    reexports.insert(name.to_string(), module.trim().to_string());
                }
            }
        }
    }
    // `#[macro_export]` macros live at the root too.
    reexports.insert("report".to_string(), "platform".to_string());
    (modules, reexports)
}

/// Edges `from -> to` between top-level modules, with the names imported.
fn import_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let (modules, reexports) = root_names();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in files {
        let Some(from) = top_module(&f) else { continue };
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // unit tests may use anything
        }
        let code = code_only(&fs::read_to_string(&f).expect("read"));
        for name in crate_paths(&code) {
            let to = if modules.contains(&name) {
                name.clone()
            } else if name == "Kmem" {
                continue; // the composition root (see the module docs)
            } else if let Some(m) = reexports.get(&name) {
                m.clone()
            } else {
                continue; // an item defined in lib.rs itself
            };
            if to != from {
                g.entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(name);
            }
        }
    }
    g
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(es) = t.g.get(v) {
            for w in es.keys() {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = g
        .iter()
        .flat_map(|(a, es)| std::iter::once(a.as_str()).chain(es.keys().map(|s| s.as_str())))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_parser_sees_use_groups_inline_paths_and_skips_comments_and_tests() {
    let code = code_only(
        "use crate::{gfp::Gfp, page_alloc::{a, b}, Kmem};\n\
         // use crate::slab::X;\n\
         let x = crate::vmscan::f();\n\
         let s = \"crate::proc\";\n\
         #[cfg(test)]\nmod tests { use crate::mempool::M; }\n\
         $crate::platform::report!();\n",
    );
    assert_eq!(
        crate_paths(&code),
        ["gfp", "page_alloc", "Kmem", "vmscan"].map(String::from)
    );
}

#[test]
fn every_module_of_the_root_is_seen() {
    let (modules, _) = root_names();
    for m in [
        "alloc",
        "mmzone",
        "page_alloc",
        "slab",
        "vmscan",
        "platform",
    ] {
        assert!(modules.contains(m), "{m} missing from {modules:?}");
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_only_it() {
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().entry(b.into()).or_default();
    }
    let found = cycles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], ["a", "b", "c"].map(String::from).into());
}

#[test]
fn no_import_cycle_in_the_core_but_page_alloc_with_vmscan() {
    let g = import_graph();
    for (a, es) in &g {
        println!(
            "{a} imports {}",
            es.keys().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    let mut bad = Vec::new();
    for scc in cycles(&g) {
        let allowed = ALLOWED_CYCLES
            .iter()
            .any(|c| c.len() == scc.len() && c.iter().all(|m| scc.contains(*m)));
        if !allowed {
            let mut why = String::new();
            for a in &scc {
                for (b, names) in g.get(a).into_iter().flatten() {
                    if scc.contains(b) {
                        why += &format!("\n  {a} -> {b}: {names:?}");
                    }
                }
            }
            bad.push(format!("cycle {scc:?}:{why}"));
        }
    }
    assert!(
        bad.is_empty(),
        "import cycles in kmem/src:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_core_file_above_the_line_limit() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = fs::read_to_string(f).expect("read").lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "core files above {MAX_LINES} lines: {long:?}"
    );
}

/// Prints the cross-subsystem `Kmem` method calls (informational).
#[test]
fn cross_subsystem_calls() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut owner: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut code_of = Vec::new();
    for f in &files {
        let Some(m) = top_module(f) else { continue };
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let code = code_only(&fs::read_to_string(f).expect("read"));
        for (at, _) in code.match_indices("impl<") {
            let head = &code[at..];
            let Some(open) = head.find('{') else { continue };
            if !head[..open].contains("Kmem<") || head[..open].contains(" for ") {
                continue;
            }
            let mut depth = 0;
            for (i, c) in head[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    let body = &head[open..open + i];
                    for (j, _) in body.match_indices("fn ") {
                        let name: String = body[j + 3..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        owner.entry(name).or_default().insert(m.clone());
                    }
                    break;
                }
            }
        }
        code_of.push((m, code));
    }
    let mut calls: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (m, code) in &code_of {
        for (at, _) in code.match_indices("self.") {
            let name: String = code[at + 5..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let called = code[at + 5 + name.len()..].starts_with('(');
            if let Some(defs) = owner.get(&name).filter(|d| called && d.len() == 1) {
                let to = defs.iter().next().expect("one");
                if to != m {
                    calls
                        .entry((m.clone(), to.clone()))
                        .or_default()
                        .insert(name);
                }
            }
        }
    }
    assert!(!calls.is_empty(), "the method scan found no call at all");
    for ((a, b), names) in &calls {
        println!(
            "{a} -> {b}: {}",
            names.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }
}
