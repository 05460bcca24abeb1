//! No import circles in src/: between the files of one module, between modules, and no
//! child file that uses its own mod.rs (or any module file above it). The test reads
//! every `crate::…`, `super::…` and `self::…` path outside comments and strings, in `use`
//! lines and inline (`crate::x::y(...)`) alike, resolves it to the file that defines the
//! module it names, and looks for circles among the children of every module.
//!
//! A circle names its files and, for each link, one line that makes it. To break one,
//! move what both sides use into a file of its own (docs/architecture.md).
//!
//! Only std: `cargo-modules` does this too, but builds rust-analyzer's crates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Circles tolerated for a while, each to be broken by a later change; a circle found that
/// is not one of these (or a part of one) fails the test. `parent: member member ...` is a
/// circle among the children of `parent`; `child -> ancestor` is a file that uses a module
/// file above it. None today: the server's circle went with its request pipeline.
const KNOWN: &[&str] = &[];

/// A module: its path (`crate::audit::writer`) and the file that defines it.
struct Modules {
    files: BTreeMap<String, PathBuf>,
}

impl Modules {
    fn read(src: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path.strip_prefix(src)?.with_extension("");
                    let mut parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    match parts.last().map(String::as_str) {
                        // The binary is its own crate: its `crate::` is not the library's.
                        Some("main") if parts.len() == 1 => continue,
                        Some("lib") if parts.len() == 1 => parts.clear(),
                        Some("mod") => {
                            parts.pop();
                        }
                        _ => {}
                    }
                    let name = std::iter::once("crate".to_string())
                        .chain(parts)
                        .collect::<Vec<_>>()
                        .join("::");
                    files.insert(name, path);
                }
            }
        }
        Ok(Self { files })
    }

    /// The module file that `path` (absolute, from `crate`) names or names an item of.
    fn file_of(&self, path: &[String]) -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| self.files.contains_key(m))
    }
}

/// The code of a file with comments, strings and character literals blanked out (so that
/// a path in a doc comment or a message is not read as a use).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied().unwrap_or('\0');
        if c == '/' && next == '/' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == '*' {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == 'r' && (next == '"' || next == '#') && !is_ident(b.get(i.wrapping_sub(1))) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            out.push_str("\"\"");
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                if b[j] == '\n' {
                    out.push('\n');
                }
                j += 1;
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (next == '\\' || b.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\''); a lifetime ('a) is left alone.
            i += if next == '\\' { 2 } else { 1 };
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// A token: an identifier (with its line), `::`, or one punctuation character.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String, usize),
    Path,
    Punct(char),
}

fn tokens(code: &str) -> Vec<Tok> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '$') {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect(), line));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push(Tok::Path);
            i += 2;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// One use of a module: where, and the absolute path it names.
struct Use {
    line: usize,
    path: Vec<String>,
}

/// Every `crate::`, `super::` and `self::` path in `code`, resolved from `module` (the
/// file's module), with `mod name { … }` blocks inside the file taken into account.
fn uses(module: &str, code: &str) -> Vec<Use> {
    let toks = tokens(code);
    let base: Vec<String> = module.split("::").map(String::from).collect();
    // Inline modules: (name, brace depth at which it opened).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut found = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(word, _)
                if word == "mod" && matches!(toks.get(i + 2), Some(Tok::Punct('{'))) =>
            {
                if let Some(Tok::Ident(name, _)) = toks.get(i + 1) {
                    inline.push((name.clone(), depth));
                }
            }
            Tok::Ident(word, line)
                if (word == "crate" || word == "super" || word == "self")
                    && toks.get(i + 1) == Some(&Tok::Path)
                    // `pub(in crate::x)` is a visibility, not a use.
                    && !matches!(i.checked_sub(1).map(|p| &toks[p]), Some(Tok::Ident(w, _)) if w == "in")
                    && !matches!(i.checked_sub(1).map(|p| &toks[p]), Some(Tok::Path)) =>
            {
                let here: Vec<String> = base
                    .iter()
                    .cloned()
                    .chain(inline.iter().map(|(n, _)| n.clone()))
                    .collect();
                let (paths, end) = tree(&toks, i);
                for relative in paths {
                    if let Some(path) = resolve(&here, &relative) {
                        found.push(Use { line: *line, path });
                    }
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Reads a path or use tree starting at `toks[i]`: `a::b::{c, d::e}` gives `a::b::c` and
/// `a::b::d::e`. Returns the paths and the index after the tree.
fn tree(toks: &[Tok], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        match toks.get(i) {
            Some(Tok::Ident(word, _)) => {
                prefix.push(word.clone());
                i += 1;
            }
            Some(Tok::Punct('*')) => return (vec![prefix], i + 1),
            Some(Tok::Punct('{')) => {
                let mut all = Vec::new();
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Punct('}')) => return (all, i + 1),
                        Some(Tok::Punct(',')) => i += 1,
                        None => return (all, i),
                        _ => {
                            let (inner, end) = tree(toks, i);
                            for p in inner {
                                let p = if p.first().is_some_and(|s| s == "self") {
                                    p[1..].to_vec()
                                } else {
                                    p
                                };
                                all.push(prefix.iter().cloned().chain(p).collect());
                            }
                            // Skip an `as alias`.
                            i = end;
                            if matches!(toks.get(i), Some(Tok::Ident(w, _)) if w == "as") {
                                i += 2;
                            }
                        }
                    }
                }
            }
            _ => return (vec![prefix], i),
        }
        if toks.get(i) == Some(&Tok::Path) {
            i += 1;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The absolute path of `relative` (which starts with `crate`, `super` or `self`) used
/// in the module `here`.
fn resolve(here: &[String], relative: &[String]) -> Option<Vec<String>> {
    let mut at: Vec<String> = here.to_vec();
    let mut rest = relative;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            at = vec!["crate".into()];
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                at.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    at.extend(rest.iter().cloned());
    Some(at)
}

/// A link from one module file to another: the example that makes it.
#[derive(Clone)]
struct Link {
    file: PathBuf,
    line: usize,
    target: String,
}

/// Strongly connected components with more than one member (Tarjan).
fn circles(nodes: &BTreeSet<String>, edges: &BTreeMap<(String, String), Link>) -> Vec<Vec<String>> {
    let mut out: BTreeMap<&String, BTreeSet<&String>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        out.entry(a).or_default().insert(b);
    }
    // Reachability closure is enough at this size (a few dozen files per module).
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in out.get(&n).into_iter().flatten() {
                if seen.insert((*m).clone()) {
                    todo.push((*m).clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for n in nodes {
        if done.contains(n) || !reaches[n].contains(n) {
            continue;
        }
        let group: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n))
            .cloned()
            .collect();
        done.extend(group.iter().cloned());
        found.push(group);
    }
    found
}

/// What the test finds: circles among the children of a module (`parent: a b c`, with
/// their links), and files that use a module file above them (`child -> ancestor`).
fn find(src: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let modules = Modules::read(src)?;
    // (parent, (child a, child b)) -> link
    let mut levels: BTreeMap<String, BTreeMap<(String, String), Link>> = BTreeMap::new();
    let mut found = Vec::new();
    for (module, file) in &modules.files {
        let code = code_only(&std::fs::read_to_string(file)?);
        for used in uses(module, &code) {
            let Some(target) = modules.file_of(&used.path) else {
                continue;
            };
            if &target == module {
                continue;
            }
            let link = Link {
                file: file.clone(),
                line: used.line,
                target: used.path.join("::"),
            };
            // A unit-test file (`mod tests;`) tests its parent: that is its job.
            if module.ends_with("::tests") {
                continue;
            }
            if module.starts_with(&format!("{target}::")) {
                found.push((format!("{module} -> {target}"), vec![describe(&link)]));
                continue;
            }
            if target.starts_with(&format!("{module}::")) {
                // A module using its own child: the direction `mod` already goes.
                continue;
            }
            let a: Vec<&str> = module.split("::").collect();
            let b: Vec<&str> = target.split("::").collect();
            let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            let parent = a[..common].join("::");
            levels
                .entry(parent)
                .or_default()
                .entry((a[common].to_string(), b[common].to_string()))
                .or_insert(link);
        }
    }
    for (parent, edges) in &levels {
        let nodes: BTreeSet<String> = edges
            .keys()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect();
        for group in circles(&nodes, edges) {
            let links = edges
                .iter()
                .filter(|((a, b), _)| group.contains(a) && group.contains(b))
                .map(|((a, b), link)| format!("{a} -> {b}: {}", describe(link)))
                .collect();
            found.push((format!("{parent}: {}", group.join(" ")), links));
        }
    }
    found.sort();
    found.dedup_by(|x, y| x.0 == y.0);
    Ok(found)
}

fn describe(link: &Link) -> String {
    format!("{}:{} uses {}", link.file.display(), link.line, link.target)
}

/// Whether `circle` is a known one, or part of one (`parent: members`, members a subset;
/// or the same `child -> ancestor`).
fn known(circle: &str) -> bool {
    KNOWN.iter().any(|k| {
        if k == &circle {
            return true;
        }
        match (k.split_once(": "), circle.split_once(": ")) {
            (Some((kp, km)), Some((cp, cm))) if kp == cp => {
                let km: BTreeSet<&str> = km.split(' ').collect();
                cm.split(' ').all(|m| km.contains(m))
            }
            _ => false,
        }
    })
}

#[test]
fn src_has_no_import_circles_but_the_known_ones() -> Result {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = find(&src)?;
    let mut report = String::new();
    for (circle, links) in &found {
        let mark = if known(circle) { "known" } else { "NEW" };
        report.push_str(&format!("{mark}: {circle}\n"));
        for link in links {
            report.push_str(&format!("    {link}\n"));
        }
    }
    eprintln!("{report}");
    let new: Vec<&String> = found.iter().map(|(c, _)| c).filter(|c| !known(c)).collect();
    assert!(new.is_empty(), "import circles in src/:\n{report}");
    Ok(())
}

/// The reader sees through comments, strings, use trees and inline modules, and finds
/// each kind of circle: so the test above cannot pass by reading nothing.
#[test]
fn the_reader_finds_each_kind_of_circle() -> Result {
    let dir = tempfile::tempdir()?;
    let src = dir.path();
    std::fs::create_dir_all(src.join("a"))?;
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n")?;
    std::fs::write(
        src.join("a/mod.rs"),
        "//! uses crate::c::X in a comment only\nmod one;\nmod two;\npub struct Shared;\nfn f() { let _ = \"crate::c::Y\"; }\n",
    )?;
    std::fs::write(src.join("a/one.rs"), "use super::{two::T, Shared};\n")?;
    std::fs::write(
        src.join("a/two.rs"),
        "pub struct T;\nfn g() { super::one::h(); }\n",
    )?;
    std::fs::write(
        src.join("b.rs"),
        "pub fn b() { crate::c::c() }\n#[cfg(test)]\nmod tests { use super::*; }\n",
    )?;
    std::fs::write(
        src.join("c.rs"),
        "use crate::{b::b, a::Shared};\npub fn c() {}\n",
    )?;
    let found: Vec<String> = find(src)?.into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        found,
        [
            "crate: b c",
            "crate::a: one two",
            "crate::a::one -> crate::a",
        ]
    );
    Ok(())
}
