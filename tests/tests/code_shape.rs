//! Code shape (issue 11): no module over 600 lines, and no function over
//! 120 lines unless a comment starting `// Long:` right above it (above or
//! among its doc comments and attributes) gives the reason.
//!
//! Every `.rs` file of the workspace is parsed with `syn`: those git tracks
//! or would add (not ignored, so no build output); without git, every one
//! under the workspace but in `target/`, directories holding cargo's
//! `CACHEDIR.TAG` and hidden directories.
//!
//! Exempt, as test code: the crates' integration-test directories
//! (`tests/tests/`, `probe-user/tests/`), `#[cfg(test)]` modules (inline, or
//! in their own file through `#[cfg(test)] mod x;`), other `#[cfg(test)]`
//! items and `#[test]` functions. A module's size is its file's line count
//! less the lines of its inline `#[cfg(test)]` items; a function's runs from
//! the line of its `fn` to its closing brace. [`NOT_OURS`] lists the few
//! places that other work owns this round, each with its reason; an entry
//! that no longer exceeds the limit fails the test until it is removed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use syn::visit::Visit;

const MAX_MODULE_LINES: usize = 600;
const MAX_FN_LINES: usize = 120;

/// Over the limit and left alone here: `path` (module) or `path::fn`.
const NOT_OURS: &[(&str, &str)] = &[
    (
        "probe-ebpf/src/maps.rs",
        "the eBPF side's maps, split by the helper that owns probe-ebpf/ this round",
    ),
    (
        "xtask/src/vm/guest.rs::boot",
        "the QEMU guest's boot, owned by the helper working in xtask/src/vm/ this round",
    ),
];

/// One thing over its limit.
#[derive(Debug, PartialEq)]
struct Offender {
    /// `path` for a module, `path::name` for a function.
    what: String,
    line: usize,
    lines: usize,
    limit: usize,
}

impl std::fmt::Display for Offender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (path, name) = match self.what.split_once("::") {
            Some((p, n)) => (p, format!("fn {n}")),
            None => (self.what.as_str(), "module".to_string()),
        };
        write!(
            f,
            "{path}:{}: {name} is {} lines (limit {})",
            self.line, self.lines, self.limit
        )
    }
}

/// `#[cfg(test)]` or `#[cfg(all(test, ...))]`; not `#[cfg(not(test))]`.
fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if !a.path().is_ident("cfg") {
            return false;
        }
        let syn::Meta::List(list) = &a.meta else {
            return false;
        };
        let t: String = list
            .tokens
            .to_string()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        t == "test" || t.starts_with("all(test,")
    })
}

/// `#[test]`, `#[tokio::test]` and the like.
fn is_test_fn(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().segments.last().is_some_and(|s| s.ident == "test"))
}

/// The `#[path = "..."]` of an out-of-line module.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| {
        let syn::Meta::NameValue(nv) = &a.meta else {
            return None;
        };
        if !nv.path.is_ident("path") {
            return None;
        }
        match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    })
}

fn first_line(attrs: &[syn::Attribute], otherwise: proc_macro2::Span) -> usize {
    attrs
        .iter()
        .map(|a| a.pound_token.span.start().line)
        .chain([otherwise.start().line])
        .min()
        .unwrap_or(0)
}

/// What one file holds: its functions, its test lines, its test modules in
/// other files.
struct Walk<'a> {
    src_lines: &'a [&'a str],
    /// (name, fn line, lines, has a `// Long:` reason)
    fns: Vec<(String, usize, usize, bool)>,
    test_lines: usize,
    /// `(name, #[path])` of `#[cfg(test)] mod name;`
    test_mod_files: Vec<(String, Option<String>)>,
}

impl Walk<'_> {
    /// A `// Long: <reason>` line among the attributes and doc comments
    /// (lines `from..fn_line`) or in the comment lines right above them.
    fn has_reason(&self, from: usize, fn_line: usize) -> bool {
        let line = |n: usize| self.src_lines.get(n.wrapping_sub(1)).map(|l| l.trim());
        let is_reason = |l: &str| {
            l.strip_prefix("// Long:")
                .is_some_and(|r| r.trim().len() >= 10)
        };
        if (from..fn_line).any(|n| line(n).is_some_and(is_reason)) {
            return true;
        }
        let mut n = from.saturating_sub(1);
        while let Some(l) = line(n).filter(|l| l.starts_with("//")) {
            if is_reason(l) {
                return true;
            }
            n -= 1;
        }
        false
    }

    fn function(
        &mut self,
        name: String,
        attrs: &[syn::Attribute],
        sig: &syn::Signature,
        block: &syn::Block,
    ) {
        let fn_line = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().end().line;
        let from = first_line(attrs, sig.fn_token.span);
        let reason = self.has_reason(from, fn_line);
        self.fns.push((name, fn_line, end + 1 - fn_line, reason));
    }

    fn test_item(&mut self, attrs: &[syn::Attribute], start: proc_macro2::Span, end: usize) {
        self.test_lines += end + 1 - first_line(attrs, start);
    }
}

impl<'ast> Visit<'ast> for Walk<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_cfg_test(&m.attrs) {
            match &m.content {
                Some((brace, _)) => {
                    self.test_item(&m.attrs, m.mod_token.span, brace.span.close().end().line)
                }
                None => self
                    .test_mod_files
                    .push((m.ident.to_string(), path_attr(&m.attrs))),
            }
            return;
        }
        syn::visit::visit_item_mod(self, m);
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if is_cfg_test(&i.attrs) {
            let end = i.brace_token.span.close().end().line;
            self.test_item(&i.attrs, i.impl_token.span, end);
            return;
        }
        syn::visit::visit_item_impl(self, i);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_cfg_test(&f.attrs) {
            let end = f.block.brace_token.span.close().end().line;
            self.test_item(&f.attrs, f.sig.fn_token.span, end);
            return;
        }
        if is_test_fn(&f.attrs) {
            return;
        }
        self.function(f.sig.ident.to_string(), &f.attrs, &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_cfg_test(&f.attrs) || is_test_fn(&f.attrs) {
            return;
        }
        self.function(f.sig.ident.to_string(), &f.attrs, &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(f.sig.ident.to_string(), &f.attrs, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// What one file says about itself.
struct FileShape {
    offenders: Vec<Offender>,
    fns: usize,
    /// Files that are `#[cfg(test)]` modules of this one.
    test_files: Vec<PathBuf>,
}

/// Check one file's text; `rel` names it in the report, `path` finds its
/// out-of-line test modules.
fn check_source(rel: &str, path: &Path, src: &str) -> Result<FileShape, String> {
    let file = syn::parse_file(src).map_err(|e| format!("{rel}: {e}"))?;
    let lines: Vec<&str> = src.lines().collect();
    let mut walk = Walk {
        src_lines: &lines,
        fns: Vec::new(),
        test_lines: 0,
        test_mod_files: Vec::new(),
    };
    walk.visit_file(&file);
    let mut offenders = Vec::new();
    let module_lines = lines.len().saturating_sub(walk.test_lines);
    if module_lines > MAX_MODULE_LINES {
        offenders.push(Offender {
            what: rel.to_string(),
            line: 1,
            lines: module_lines,
            limit: MAX_MODULE_LINES,
        });
    }
    for (name, line, size, reason) in &walk.fns {
        if *size > MAX_FN_LINES && !reason {
            offenders.push(Offender {
                what: format!("{rel}::{name}"),
                line: *line,
                lines: *size,
                limit: MAX_FN_LINES,
            });
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let own_dir = if matches!(stem, "mod" | "lib" | "main") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    let mut test_files = Vec::new();
    for (name, at) in walk.test_mod_files {
        match at {
            Some(p) => test_files.push(dir.join(p)),
            None => {
                test_files.push(own_dir.join(format!("{name}.rs")));
                test_files.push(own_dir.join(name).join("mod.rs"));
            }
        }
    }
    Ok(FileShape {
        offenders,
        fns: walk.fns.len(),
        test_files,
    })
}

/// The workspace's `.rs` files as git sees them: tracked, or new and not
/// ignored (so `target/` and other ignored output stay out). None where
/// there is no git (a copied tree).
fn git_rust_files(root: &Path) -> Option<Vec<PathBuf>> {
    let out = std::process::Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .args(["--", "*.rs"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let files: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| root.join(String::from_utf8_lossy(f).as_ref()))
        // Deleted but not yet committed: nothing to read.
        .filter(|p| p.exists())
        .collect();
    Some(files)
}

/// Every `.rs` file under `dir`, skipping build output and hidden folders.
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() {
            let build_output = (dir == root && name == "target") || p.join("CACHEDIR.TAG").exists();
            if !name.starts_with('.') && !build_output {
                rust_files(root, &p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// A crate's integration tests: `<crate>/tests/...` where `<crate>` holds a
/// package's Cargo.toml (the workspace's `tests/` crate is one, its own
/// `tests/tests/` its integration tests).
fn is_integration_test(root: &Path, p: &Path) -> bool {
    let is_package = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[package]"))
    };
    p.ancestors().any(|a| {
        a.file_name().is_some_and(|n| n == "tests")
            && a.starts_with(root)
            && a.parent().is_some_and(is_package)
    })
}

#[test]
fn modules_and_functions_stay_short() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf();
    let mut files = git_rust_files(&root).unwrap_or_else(|| {
        let mut files = Vec::new();
        rust_files(&root, &root, &mut files);
        files
    });
    files.sort();
    let mut shapes = Vec::new();
    let mut test_files = BTreeSet::new();
    let mut errors = Vec::new();
    for p in files.iter().filter(|p| !is_integration_test(&root, p)) {
        let rel = p
            .strip_prefix(&root)
            .unwrap_or(p)
            .to_string_lossy()
            .to_string();
        let src = std::fs::read_to_string(p).expect("read a workspace file");
        match check_source(&rel, p, &src) {
            Ok(s) => {
                test_files.extend(s.test_files.iter().cloned());
                shapes.push((p.clone(), s));
            }
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.is_empty(), "files syn cannot parse: {errors:#?}");
    let checked: Vec<&(PathBuf, FileShape)> = shapes
        .iter()
        .filter(|(p, _)| !test_files.contains(p))
        .collect();
    let fns: usize = checked.iter().map(|(_, s)| s.fns).sum();
    println!(
        "{} files ({} test modules in their own file left out), {fns} functions",
        checked.len(),
        shapes.len() - checked.len()
    );
    // A real workspace: the scan found what it should.
    assert!(
        checked.len() > 100 && fns > 1000,
        "{} files, {fns} fns",
        checked.len()
    );
    let mut offenders = Vec::new();
    let mut excused = BTreeSet::new();
    for o in checked.iter().flat_map(|(_, s)| &s.offenders) {
        match NOT_OURS.iter().find(|(what, _)| *what == o.what) {
            Some((what, why)) => {
                println!("left alone: {o} ({why})");
                excused.insert(*what);
            }
            None => offenders.push(o),
        }
    }
    let stale: Vec<&str> = NOT_OURS
        .iter()
        .map(|(w, _)| *w)
        .filter(|w| !excused.contains(w))
        .collect();
    for o in &offenders {
        println!("{o}");
    }
    assert!(
        offenders.is_empty(),
        "{} over the limit: split them, or for a function give the reason in a \
         `// Long:` comment right above it:\n{}",
        offenders.len(),
        offenders
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        stale.is_empty(),
        "no longer over the limit, remove from NOT_OURS: {stale:?}"
    );
}

/// The checker finds what it should on sources made for it.
#[test]
fn the_checker_catches_and_excuses_what_it_should() {
    let body = |n: usize| "    let _x = 1;\n".repeat(n);
    let long = format!("fn long() {{\n{}}}\n", body(MAX_FN_LINES - 1));
    let ok = format!("fn ok() {{\n{}}}\n", body(MAX_FN_LINES - 2));
    let p = Path::new("x/src/a.rs");
    let found = check_source("a.rs", p, &format!("{ok}{long}")).unwrap();
    assert_eq!(
        found.offenders,
        vec![Offender {
            what: "a.rs::long".into(),
            line: MAX_FN_LINES + 1,
            lines: MAX_FN_LINES + 1,
            limit: MAX_FN_LINES,
        }]
    );
    assert_eq!(found.fns, 2);
    // A reason right above it, or above its doc comment and attributes.
    for head in [
        "// Long: one match arm per event kind.\n",
        "// Long: one match arm per event kind.\n/// Doc.\n#[inline]\n",
        "/// Doc.\n// Long: one match arm per event kind.\n#[inline]\n",
    ] {
        let s = check_source("a.rs", p, &format!("{head}{long}")).unwrap();
        assert!(s.offenders.is_empty(), "{head}: {:?}", s.offenders);
    }
    // No reason given, or a comment apart from it: still an offender.
    for head in ["// Long:\n", "// Long: one arm per kind.\n\n"] {
        let s = check_source("a.rs", p, &format!("{head}{long}")).unwrap();
        assert_eq!(s.offenders.len(), 1, "{head}");
    }
    // Methods count; test code does not.
    let method = format!("struct S;\nimpl S {{\n{long}}}\n");
    assert_eq!(check_source("a.rs", p, &method).unwrap().offenders.len(), 1);
    let tests = format!("#[cfg(test)]\nmod tests {{\n#[test]\n{long}}}\n");
    assert!(check_source("a.rs", p, &tests)
        .unwrap()
        .offenders
        .is_empty());
    // A module: its own lines over the limit, its test module's not.
    let many = "const A: u8 = 0;\n".repeat(MAX_MODULE_LINES - 10);
    let with_tests = format!(
        "{many}#[cfg(test)]\nmod tests {{\n{}}}\n",
        "const T: u8 = 0;\n".repeat(20)
    );
    assert!(check_source("a.rs", p, &with_tests)
        .unwrap()
        .offenders
        .is_empty());
    let big = format!("{many}{}", "const B: u8 = 0;\n".repeat(11));
    let s = check_source("a.rs", p, &big).unwrap();
    assert_eq!(s.offenders.len(), 1);
    assert_eq!(s.offenders[0].lines, MAX_MODULE_LINES + 1);
    // Out-of-line test modules are found where rustc looks for them.
    let s = check_source(
        "a.rs",
        p,
        "#[cfg(test)]\nmod t;\n#[cfg(test)]\n#[path = \"u.rs\"]\nmod u;\n",
    )
    .unwrap();
    assert!(s.test_files.contains(&PathBuf::from("x/src/a/t.rs")));
    assert!(s.test_files.contains(&PathBuf::from("x/src/u.rs")));
    // `#[cfg(not(test))]` is not test code.
    let not_test = format!("#[cfg(not(test))]\n{long}");
    assert_eq!(
        check_source("a.rs", p, &not_test).unwrap().offenders.len(),
        1
    );
}
