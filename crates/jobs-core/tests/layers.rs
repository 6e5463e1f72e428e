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

/// The top-level modules a file names with `crate::<module>`.
#[derive(Default)]
struct CrateImports(BTreeSet<String>);

impl CrateImports {
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, token) in tokens.iter().enumerate() {
            match token {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Ident(ident) if ident == "crate" => {
                    if let [
                        TokenTree::Punct(a),
                        TokenTree::Punct(b),
                        TokenTree::Ident(module),
                    ] = &tokens[i + 1..(i + 4).min(tokens.len())]
                        && a.as_char() == ':'
                        && b.as_char() == ':'
                    {
                        self.0.insert(module.to_string());
                    }
                }
                _ => {}
            }
        }
    }

    fn use_tree(&mut self, tree: &syn::UseTree, at_crate: bool) {
        match tree {
            syn::UseTree::Path(path) if path.ident == "crate" => self.use_tree(&path.tree, true),
            syn::UseTree::Path(path) if at_crate => _ = self.0.insert(path.ident.to_string()),
            syn::UseTree::Name(name) if at_crate => _ = self.0.insert(name.ident.to_string()),
            syn::UseTree::Rename(rename) if at_crate => _ = self.0.insert(rename.ident.to_string()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(tree, at_crate);
                }
            }
            _ => {}
        }
    }
}

impl<'ast> Visit<'ast> for CrateImports {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, false);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next())
            && first.ident == "crate"
        {
            self.0.insert(second.ident.to_string());
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
            syn::Meta::NameValue(pair) => self.visit_expr(&pair.value),
            syn::Meta::Path(path) => self.visit_path(path),
        }
    }
}

/// What breaks the rule: `(file, imported module, why)`.
fn violations(table: &BTreeMap<String, Layer>) -> Vec<String> {
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
        let file = syn::parse_file(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{shown}: {e}"));
        let mut imports = CrateImports::default();
        imports.visit_file(&file);
        for import in imports.0.iter().filter(|m| **m != module) {
            match table.get(import) {
                None => found.push(format!("{shown}: imports `{import}`, which is on no layer")),
                Some(theirs) if theirs.rank >= own.rank => found.push(format!(
                    "{shown} (layer {} {}) imports `{import}` (layer {} {})",
                    own.rank, own.name, theirs.rank, theirs.name
                )),
                Some(_) => {}
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
}

#[test]
fn the_check_sees_every_kind_of_import() {
    let source = r#"
        use crate::{alpha, beta::B as Renamed, gamma::{self, G}};
        #[error("{}", crate::delta::MESSAGE)]
        struct S(crate::epsilon::E);
        fn f() -> i32 { tracing::info!(x = %crate::zeta::z()); crate::eta::ETA }
        /// [`crate::theta::T`] is only a doc link.
        fn g() {}
    "#;
    let mut imports = CrateImports::default();
    imports.visit_file(&syn::parse_file(source).unwrap());
    let expected = ["alpha", "beta", "delta", "epsilon", "eta", "gamma", "zeta"];
    assert_eq!(imports.0.iter().collect::<Vec<_>>(), expected);
}
