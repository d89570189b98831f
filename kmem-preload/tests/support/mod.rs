//! What the tests and the bench share: building `libkmem_preload.so`.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/libkmem_preload.so`, brought up to date: cargo does
/// not build a `cdylib` for its own package's tests or benches, so this
/// runs `cargo build -p kmem-preload` into the target directory the
/// running executable was built in.
pub fn build_so() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "-p", "kmem-preload", "--quiet"]);
    if dir.file_name().unwrap() == "release" {
        cargo.arg("--release");
    }
    let target = dir.parent().unwrap();
    let st = cargo.env("CARGO_TARGET_DIR", target).status().unwrap();
    assert!(st.success(), "cargo build -p kmem-preload failed");
    let so = dir.join("libkmem_preload.so");
    assert!(so.exists(), "{} not built", so.display());
    so
}
