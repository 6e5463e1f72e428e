//! The import rule of docs/architecture.md, "Layers": every module of `src/` imports only from
//! layers below its own. The layer table is read from that file (it is the rule, written once);
//! the imports are read from the source with `syn`: every `crate::<module>` path in a `use`, an
//! expression, a type, a pattern, a macro's tokens or an attribute. Doc comments are not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

const ARCHITECTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/architecture.md");
const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// A module's layer: its number and its name, as the table writes them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Layer {
    rank: u32,
    name: String,
}

/// `module -> layer`, from the "Layers" table of docs/architecture.md.
fn layer_table(markdown: &str) -> BTreeMap<String, Layer> {
    let section = markdown
        .split("\n## ")
        .find(|s| s.starts_with("Layers\n"))
        .expect("docs/architecture.md has a \"## Layers\" section");
    let mut table = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let Some((rank, name)) = cells[0].split_once(' ') else {
            continue;
        };
        let Ok(rank) = rank.parse() else {
            continue; // the header
        };
        let layer = Layer {
            rank,
            name: name.to_owned(),
        };
        for module in cells[1].split(',').map(|m| m.trim().trim_matches('`')) {
            let earlier = table.insert(module.to_owned(), layer.clone());
            assert!(earlier.is_none(), "{module} is on two layers");
        }
    }
    assert!(!table.is_empty(), "the Layers table has no rows");
    table
}

/// Every `.rs` file under `dir`, and the top-level module it belongs to (`transitions/owner.rs`
/// belongs to `transitions`, `store.rs` and `store/reads.rs` to `store`).
fn source_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(SRC).unwrap();
                let first = relative.components().next().unwrap();
                let module = Path::new(first.as_os_str()).with_extension("");
                files.push((module.to_string_lossy().into_owned(), path));
            }
        }
    }
    files.sort();
    files
}

/// What one file names of the crate: the top-level modules its paths lead to (resolving
/// `crate::`, `$crate::`, `self::` and `super::` against the file's own module path), the
/// forms refused outright because they hide where a path leads, and the methods it calls.
#[derive(Default)]
struct Imports {
    /// The module the visitor stands in: `["store", "reads"]` in `store/reads.rs`, plus any
    /// inline `mod` it is inside.
    module: Vec<String>,
    found: BTreeSet<String>,
    refused: Vec<String>,
    /// Methods called on `self`.
    calls: BTreeSet<String>,
}

const ROOTS: [&str; 4] = ["crate", "$crate", "self", "super"];

impl Imports {
    fn in_module(module: &[&str]) -> Self {
        Self {
            module: module.iter().map(|m| m.to_string()).collect(),
            ..Self::default()
        }
    }

    /// Records where `segments` (starting at one of [`ROOTS`]) lead; `glob` for a `::*`.
    fn resolve(&mut self, segments: &[String], glob: bool) {
        let mut rest = segments.iter().peekable();
        let mut at: Vec<String> = match rest.peek().map(|s| s.as_str()) {
            Some("crate" | "$crate") => {
                rest.next();
                Vec::new()
            }
            Some("self") => {
                rest.next();
                self.module.clone()
            }
            _ => self.module.clone(),
        };
        while rest.peek().is_some_and(|s| *s == "super") {
            rest.next();
            at.pop();
        }
        at.extend(rest.cloned());
        match at.first() {
            Some(top) => _ = self.found.insert(top.clone()),
            None if glob => self.refused.push("a glob import of the crate root".into()),
            None => self.refused.push("a name for the crate root".into()),
        }
    }

    fn use_tree(&mut self, tree: &syn::UseTree, mut prefix: Vec<String>) {
        let rooted = |p: &[String]| p.first().is_some_and(|s| ROOTS.contains(&s.as_str()));
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(&path.tree, prefix);
            }
            syn::UseTree::Name(syn::UseName { ident })
            | syn::UseTree::Rename(syn::UseRename { ident, .. }) => {
                if ident != "self" {
                    prefix.push(ident.to_string());
                }
                if rooted(&prefix) {
                    self.resolve(&prefix, false);
                }
            }
            syn::UseTree::Glob(_) if rooted(&prefix) => self.resolve(&prefix, true),
            syn::UseTree::Glob(_) => {}
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(tree, prefix.clone());
                }
            }
        }
    }

    /// Paths in tokens the parser leaves unparsed (macro bodies, attribute arguments): a root
    /// followed by `::` segments, or by `::{...}` naming several.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let colons = |i: usize| {
            matches!((tokens.get(i), tokens.get(i + 1)),
                (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                    if a.as_char() == ':' && b.as_char() == ':')
        };
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Literal(literal) => self.string_path(&literal.to_string()),
                TokenTree::Ident(root) if ROOTS.contains(&root.to_string().as_str()) => {
                    let mut segments = vec![root.to_string()];
                    while colons(i + 1) {
                        match tokens.get(i + 3) {
                            Some(TokenTree::Ident(next)) => segments.push(next.to_string()),
                            Some(TokenTree::Group(group)) => {
                                for first in group_heads(group.stream()) {
                                    self.resolve(&[segments.clone(), vec![first]].concat(), false);
                                }
                                break;
                            }
                            _ => break,
                        }
                        i += 3;
                    }
                    if segments.len() > 1 {
                        self.resolve(&segments, false);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// A path written as a string, as serde's `with = "crate::..."` takes one.
    fn string_path(&mut self, literal: &str) {
        let text = literal.trim_matches('"');
        let segments: Vec<String> = text.split("::").map(str::to_owned).collect();
        if segments.len() > 1 && ROOTS.contains(&segments[0].as_str()) {
            self.resolve(&segments, false);
        }
    }
}

/// The first identifier of each comma-separated item of a `{...}` group.
fn group_heads(tokens: TokenStream) -> Vec<String> {
    let mut heads = Vec::new();
    let mut at_start = true;
    for token in tokens {
        match token {
            TokenTree::Ident(ident) if at_start => heads.push(ident.to_string()),
            TokenTree::Punct(p) if p.as_char() == ',' => {
                at_start = true;
                continue;
            }
            _ => {}
        }
        at_start = false;
    }
    heads
}

impl<'ast> Visit<'ast> for Imports {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, Vec::new());
    }

    fn visit_item_extern_crate(&mut self, item: &'ast syn::ItemExternCrate) {
        if item.ident == "self" {
            self.refused
                .push("`extern crate self`, a name for the crate root".into());
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 && ROOTS.contains(&segments[0].as_str()) {
            self.resolve(&segments, false);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        match &attr.meta {
            _ if attr.path().is_ident("doc") => {}
            syn::Meta::List(list) => self.tokens(list.tokens.clone()),
            syn::Meta::NameValue(pair) => match &pair.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(text),
                    ..
                }) => self.string_path(&text.value()),
                other => self.visit_expr(other),
            },
            syn::Meta::Path(path) => self.visit_path(path),
        }
    }

    /// Only calls on `self`: a `Store` method calling another of its own.
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        if let syn::Expr::Path(receiver) = call.receiver.as_ref()
            && receiver.path.is_ident("self")
        {
            self.calls.insert(call.method.to_string());
        }
        syn::visit::visit_expr_method_call(self, call);
    }
}

/// A file's module path: `store/reads.rs` is `["store", "reads"]`, `store/mod.rs` `["store"]`.
fn module_path(path: &Path) -> Vec<String> {
    let relative = path.strip_prefix(SRC).unwrap().with_extension("");
    let mut module: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    module
}

fn read(path: &Path) -> Imports {
    let shown = path.strip_prefix(SRC).unwrap().display().to_string();
    let file = syn::parse_file(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let module = module_path(path);
    let mut imports = Imports::in_module(&module.iter().map(String::as_str).collect::<Vec<_>>());
    imports.visit_file(&file);
    imports
}

/// The public methods `transitions` adds to `Store` (its writes): `store` itself must not call
/// them, or the store would lean on the layer above it without naming it.
fn store_methods_of_transitions() -> BTreeSet<String> {
    let mut methods = BTreeSet::new();
    for (module, path) in source_files(Path::new(SRC)) {
        if module != "transitions" {
            continue;
        }
        let file = syn::parse_file(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for item in file.items {
            let syn::Item::Impl(block) = item else {
                continue;
            };
            let syn::Type::Path(ty) = block.self_ty.as_ref() else {
                continue;
            };
            if ty.path.segments.last().is_none_or(|s| s.ident != "Store") {
                continue;
            }
            for item in block.items {
                if let syn::ImplItem::Fn(f) = item
                    && matches!(f.vis, syn::Visibility::Public(_))
                {
                    methods.insert(f.sig.ident.to_string());
                }
            }
        }
    }
    methods
}

/// What breaks the rule, one line each.
fn violations(table: &BTreeMap<String, Layer>) -> Vec<String> {
    let writes = store_methods_of_transitions();
    let mut found = Vec::new();
    for (module, path) in source_files(Path::new(SRC)) {
        let shown = path.strip_prefix(SRC).unwrap().display().to_string();
        if module == "lib" {
            continue; // declares and re-exports the modules; above them all
        }
        let Some(own) = table.get(&module) else {
            found.push(format!("{shown}: module `{module}` is on no layer"));
            continue;
        };
        let imports = read(&path);
        for refused in &imports.refused {
            found.push(format!("{shown}: {refused}"));
        }
        for import in imports.found.iter().filter(|m| **m != module) {
            match table.get(import) {
                None => found.push(format!("{shown}: names `{import}`, which is on no layer")),
                Some(theirs) if theirs.rank >= own.rank => found.push(format!(
                    "{shown} (layer {} {}) imports `{import}` (layer {} {})",
                    own.rank, own.name, theirs.rank, theirs.name
                )),
                Some(_) => {}
            }
        }
        if module == "store" {
            for call in imports.calls.intersection(&writes) {
                found.push(format!(
                    "{shown} (store) calls `{call}`, a transition: the store does not call up"
                ));
            }
        }
    }
    found
}

#[test]
fn every_import_points_down_a_layer() {
    let table = layer_table(&std::fs::read_to_string(ARCHITECTURE).unwrap());
    let found = violations(&table);
    assert!(
        found.is_empty(),
        "imports that break docs/architecture.md \"Layers\":\n{}",
        found.join("\n")
    );
    let files: BTreeSet<String> = source_files(Path::new(SRC))
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| m != "lib")
        .collect();
    let listed: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(
        listed, files,
        "the Layers table lists exactly the modules of src/"
    );
    assert!(
        writes_are_seen(),
        "the transitions' Store methods are found"
    );
}

fn writes_are_seen() -> bool {
    let writes = store_methods_of_transitions();
    ["claim", "insert", "requeue_for_retry", "cancel"]
        .iter()
        .all(|w| writes.contains(*w))
}

/// Every form a path to another module can take, read in `task/probe.rs` (module
/// `task::probe`): the ones it must see and the ones it must refuse.
#[test]
fn the_check_sees_every_kind_of_import() {
    let source = r#"
        use crate::{alpha, beta::B as Renamed, gamma::{self, G}};
        use super::super::iota::I;
        use super::Sibling;
        use self::inner::X;
        #[error("{}", crate::delta::MESSAGE)]
        struct S(crate::epsilon::E);
        #[derive(Serialize)]
        struct T { #[serde(serialize_with = "crate::kappa::ser")] t: u8 }
        fn f() -> i32 { tracing::info!(x = %crate::zeta::z()); crate::eta::ETA }
        macro_rules! m { () => { $crate::lambda::L } }
        my_macro! { use crate::{mu, nu::N}; }
        mod inner { fn h() { super::super::super::xi::x(); } }
        /// [`crate::theta::T`] is only a doc link.
        fn g(&self) { self.claim(); self.store.cancel(); }
    "#;
    let mut imports = Imports::in_module(&["task", "probe"]);
    imports.visit_file(&syn::parse_file(source).unwrap());
    let expected = [
        "alpha", "beta", "delta", "epsilon", "eta", "gamma", "iota", "kappa", "lambda", "mu", "nu",
        "task", "xi", "zeta",
    ];
    assert_eq!(imports.found.iter().collect::<Vec<_>>(), expected);
    assert!(imports.refused.is_empty(), "{:?}", imports.refused);
    assert_eq!(imports.calls.iter().collect::<Vec<_>>(), ["claim"]);

    // Forms that hide where a path leads are refused.
    for hidden in [
        "use crate as root;",
        "use crate::*;",
        "extern crate self as root;",
        "use super::*;",
    ] {
        let mut imports = Imports::in_module(&["task"]);
        imports.visit_file(&syn::parse_file(hidden).unwrap());
        assert_eq!(imports.refused.len(), 1, "{hidden}: {:?}", imports.refused);
    }
}
