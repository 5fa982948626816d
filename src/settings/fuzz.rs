//! Property-based fuzzing of the configuration file reader (`Settings::load`): the example file
//! and a small one, mutated one line at a time (values of other types, removed, repeated, unknown
//! keys and tables), damaged as text, and random bytes. An error naming the file, or settings;
//! never a panic. `PROPTEST_CASES` sets the case count (see fuzz-support).

use fuzz_support::{text, Fuzz};

use super::Settings;

#[test]
fn config_files_never_panic() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pki.example.toml")).expect("example");
    let small = "[server]\nlisten = \"127.0.0.1:8443\"\nworkers = 2\n\n[database]\ncache_mib = 64\n\n[ca]\n\
                 public_base_url = \"https://pki.example.com\"\n\n[hsm]\nbackend = \"soft\"\n"
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pki.toml");
    for valid in [&example, &small] {
        std::fs::write(&path, valid).expect("write");
        Settings::load(Some(&path)).expect("the valid files load");
    }
    Fuzz::new(env!("CARGO_MANIFEST_DIR"), "config-file", 2000).run(
        text::toml_inputs(vec![example, small]),
        |input| {
            std::fs::write(&path, &input).expect("write");
            if let Err(e) = Settings::load(Some(&path)) {
                let msg = e.to_string();
                fuzz_support::proptest::prop_assert!(
                    msg.contains("pki.toml"),
                    "the error does not name the file: {msg}"
                );
            }
            Ok(())
        },
    );
}
