//! The code gates of the test command (scripts/gates.sh, run by scripts/test.sh) fail on a planted
//! clippy warning and on planted misformatting, and pass without them: a small workspace with the
//! project's lints and clippy settings is made in a temporary directory, and the gate script is
//! run on it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The root Cargo.toml's `[workspace.lints...]` sections.
fn workspace_lints() -> String {
    let root = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let mut out = String::new();
    let mut on = false;
    for line in root.lines() {
        if line.starts_with('[') {
            on = line.starts_with("[workspace.lints");
        }
        if on {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(out.contains("[workspace.lints.clippy]"), "no clippy lints in the root Cargo.toml");
    out
}

/// Runs `scripts/gates.sh GATE -C dir`; (success, output).
fn gate(gate: &str, dir: &Path) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/gates.sh"))
        .args([gate, "-C"])
        .arg(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("bash");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

const CLEAN: &str = "//! A crate for the gate test.\n\n/// Whether `v` is empty.\npub fn empty(v: &[u8]) -> bool {\n    v.is_empty()\n}\n";

#[test]
fn a_planted_clippy_warning_or_misformatting_fails_the_gates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [\".\"]\n\n{}\n[package]\nname = \"planted\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[lints]\nworkspace = true\n",
            workspace_lints()
        ),
    )
    .expect("write");
    for f in ["clippy.toml", "rustfmt.toml"] {
        std::fs::copy(repo().join(f), d.join(f)).expect("copy");
    }
    std::fs::create_dir(d.join("src")).expect("mkdir");
    let lib = d.join("src/lib.rs");

    std::fs::write(&lib, CLEAN).expect("write");
    let (ok, out) = gate("clippy", d);
    assert!(ok, "the clean crate fails clippy: {out}");
    let (ok, out) = gate("fmt", d);
    assert!(ok, "the clean crate fails fmt: {out}");

    // clippy::len_zero is a warning, not an error: only `-D warnings` makes it fail.
    std::fs::write(&lib, CLEAN.replace("v.is_empty()", "v.len() == 0")).expect("write");
    let (ok, out) = gate("clippy", d);
    assert!(!ok, "a clippy warning passed the gate: {out}");
    assert!(out.contains("len_zero") && out.contains("GATE FAILED: cargo clippy"), "{out}");

    std::fs::write(
        &lib,
        CLEAN.replace("pub fn empty(v: &[u8]) -> bool {", "pub fn empty( v: &[u8] )->bool{"),
    )
    .expect("write");
    let (ok, out) = gate("fmt", d);
    assert!(!ok, "misformatted code passed the gate: {out}");
    assert!(out.contains("GATE FAILED: cargo fmt"), "{out}");
}

#[test]
fn the_test_command_runs_the_gates_and_keeps_their_failure() {
    let script = std::fs::read_to_string(repo().join("scripts/test.sh")).expect("test.sh");
    assert!(
        script.contains("bash scripts/gates.sh all || status=$?"),
        "scripts/test.sh does not run the gates"
    );
    assert!(
        script.trim_end().ends_with("exit \"$status\""),
        "scripts/test.sh does not exit with the gates' status"
    );
}
