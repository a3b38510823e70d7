//! Build script of `lingxi-node`: embeds every file of `console/` (the agent console's static
//! files) in the binary. It writes `$OUT_DIR/console_files.rs`, a slice of
//! `(relative path, include_bytes!(..), etag)` that `src/console.rs` includes; the whole
//! directory is watched, so adding, changing or removing a file rebuilds the node.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let dir = Path::new(&manifest).join("console");
    println!("cargo:rerun-if-changed=console");

    let mut files = Vec::new();
    if dir.is_dir() {
        collect(&dir, &dir, &mut files);
    }
    files.sort();
    let mut out = String::from("&[\n");
    for (rel, abs) in files {
        let bytes = std::fs::read(&abs)
            .unwrap_or_else(|e| panic!("cannot read console file {}: {e}", abs.display()));
        let abs = abs
            .to_str()
            .unwrap_or_else(|| panic!("console file path is not UTF-8: {}", abs.display()));
        let _ = writeln!(
            out,
            "    ({rel:?}, include_bytes!({abs:?}), \"\\\"{:016x}\\\"\"),",
            fnv1a(&bytes)
        );
    }
    out.push_str("]\n");
    let target = Path::new(&out_dir).join("console_files.rs");
    std::fs::write(&target, out)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
}

/// Every regular file under `dir`, as (path relative to `root` with `/`, absolute path);
/// hidden files and editor leftovers are skipped.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list console directory {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("walked from root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push((rel, path));
        }
    }
}

/// FNV-1a, 64 bits: a content hash for ETags (stable, no dependency).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
