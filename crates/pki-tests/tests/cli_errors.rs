//! Bad input at the command line: each refusal exits non-zero with exactly one line on stderr,
//! starting `error:` and naming the problem, and changes nothing — against the database directly
//! and through a running server.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

struct Case {
    args: Vec<String>,
    names: Vec<String>,
}

fn case(args: &[&str], names: &[&str]) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

/// (cases, files that must not be written)
fn cases(env: &Env, signing_serial: &str) -> (Vec<Case>, Vec<std::path::PathBuf>) {
    let key = gen_key(env.dir(), "heidi.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("heidi.csr"), "/CN=heidi@example.com", &[]);
    let csr = p(&csr);
    let pw = p(&env.write("good.pw", "a good long password\n"));
    let empty_pw = p(&env.write("empty.pw", ""));
    let short_pw = p(&env.write("short.pw", "short\n"));
    let missing = p(&env.path("no-such.csr"));
    let dir_csr = env.path("a-directory.csr");
    std::fs::create_dir(&dir_csr).unwrap();
    let dir_csr = p(&dir_csr);
    let out_p12 = env.path("must-not-exist.p12");
    let p12 = p(&out_p12);
    let long_serial = "z".repeat(10_000);
    let hex41 = "1".repeat(41);
    let hex43 = "a".repeat(43);
    let issue = |email: &str, usage: &str| -> Vec<String> {
        ["issue", "--email", email, "--usage", usage, "--csr", &csr].iter().map(|s| s.to_string()).collect()
    };
    let mut v = vec![
        // Serial spellings.
        case(&["revoke", "--serial", "xyz", "--reason", "keyCompromise"], &["invalid serial number", "xyz"]),
        case(&["revoke", "--serial", "", "--reason", "keyCompromise"], &["invalid serial number", "empty"]),
        case(
            &["revoke", "--serial", &hex41, "--reason", "keyCompromise"],
            &["invalid serial number", "at most 20"],
        ),
        case(&["show", "--serial", &hex43], &["invalid serial number", "too long"]),
        case(&["show", "--serial", "12g4"], &["invalid serial number", "'g'"]),
        case(&["escrow", "request", "--serial", "0x"], &["invalid serial number"]),
        case(&["show", "--serial", "0abcdef0123"], &["no certificate with serial", "ABCDEF0123"]),
        case(
            &["revoke", "--serial", "0abcdef0123", "--reason", "superseded"],
            &["no certificate with serial", "ABCDEF0123"],
        ),
        // Reasons.
        case(&["revoke", "--serial", signing_serial, "--reason", "bogus"], &["revocation reason", "bogus"]),
        case(
            &["revoke", "--serial", signing_serial, "--reason", "certificateHold"],
            &["certificateHold", "suspension"],
        ),
        case(
            &["revoke", "--serial", signing_serial, "--reason", "removeFromCRL"],
            &["removeFromCRL", "suspension"],
        ),
        // CSR files.
        case(
            &["issue", "--email", "heidi@example.com", "--usage", "signing", "--csr", &missing],
            &["cannot read CSR file", &missing],
        ),
        case(
            &["issue", "--email", "heidi@example.com", "--usage", "signing", "--csr", &dir_csr],
            &["cannot read CSR file", &dir_csr],
        ),
        // Files past their bound (an endless device given by mistake): refused once it is passed.
        case(
            &["issue", "--email", "heidi@example.com", "--usage", "signing", "--csr", "/dev/zero"],
            &["CSR file /dev/zero is larger than 1048576 bytes"],
        ),
        case(
            &["audit", "verify", "--checkpoint", "/dev/zero"],
            &["checkpoint file /dev/zero is larger than"],
        ),
        // Password files and --generate.
        case(
            &[
                "issue",
                "--email",
                "heidi@example.com",
                "--usage",
                "encryption",
                "--generate",
                "--p12",
                &p12,
                "--p12-password-file",
                &empty_pw,
            ],
            &["password file", "empty"],
        ),
        case(
            &[
                "issue",
                "--email",
                "heidi@example.com",
                "--usage",
                "encryption",
                "--generate",
                "--p12",
                &p12,
                "--p12-password-file",
                &short_pw,
            ],
            &["password", "at least 8"],
        ),
        case(
            &[
                "issue",
                "--email",
                "heidi@example.com",
                "--usage",
                "encryption",
                "--generate",
                "--p12",
                &p12,
                "--p12-password-file",
                &missing,
            ],
            &["cannot read password file", &missing],
        ),
        case(
            &[
                "issue",
                "--email",
                "heidi@example.com",
                "--usage",
                "signing",
                "--generate",
                "--p12",
                &p12,
                "--p12-password-file",
                &pw,
            ],
            &["signing keys", "--csr"],
        ),
        case(
            &[
                "issue",
                "--email",
                "heidi@example.com",
                "--usage",
                "encryption",
                "--generate",
                "--key-type",
                "p521",
                "--p12",
                &p12,
                "--p12-password-file",
                &pw,
            ],
            &["key type", "p521"],
        ),
        case(
            &[
                "issue",
                "--email",
                "heidi@example.com",
                "--usage",
                "encryption",
                "--generate",
                "--key-type",
                "ed25519",
                "--p12",
                &p12,
                "--p12-password-file",
                &pw,
            ],
            &["ed25519", "encryption"],
        ),
        case(
            &["issue", "--email", "heidi@example.com", "--usage", "encryption", "--generate", "--p12", &p12],
            &["--p12-password-file"],
        ),
        case(&["issue", "--email", "heidi@example.com", "--usage", "encryption"], &["--csr", "--generate"]),
        case(&["escrow", "request", "--serial", signing_serial], &["no escrowed key", signing_serial]),
        case(
            &["escrow", "recover", "--serial", signing_serial, "--p12", &p12, "--p12-password-file", &pw],
            &["one officer is gone", "pki escrow request", "pki escrow approve"],
        ),
        // Other arguments.
        case(&["list", "--email", "not an address"], &["e-mail address", "not an address"]),
        case(&["crl", "--ca", "bogus"], &["unknown CA", "bogus"]),
        // A value of 10,000 characters: quoted in part, the reason kept.
        case(
            &["revoke", "--serial", &long_serial, "--reason", "keyCompromise"],
            &[
                "invalid serial number: \"zzz",
                "characters left out",
                "zzz\" contains 'z'; expected hex digits",
            ],
        ),
        case(&["ca-cert", "bogus"], &["unknown CA certificate", "bogus"]),
        case(&["frobnicate"], &["frobnicate"]),
    ];
    // E-mail addresses and usages.
    for (email, names) in [
        ("alice", vec!["invalid e-mail address", "\"alice\"", "no '@'"]),
        ("a@b", vec!["invalid e-mail address", "\"a@b\"", "two labels"]),
        ("al ice@example.com", vec!["invalid e-mail address", "al ice@example.com", "' '"]),
        ("alice@exa mple.com", vec!["invalid e-mail address", "alice@exa mple.com", "' '"]),
    ] {
        v.push(Case { args: issue(email, "signing"), names: names.iter().map(|s| s.to_string()).collect() });
    }
    v.push(Case { args: issue("heidi@example.com", "bogus"), names: vec!["usage".into(), "bogus".into()] });
    v.push(Case { args: issue("heidi@example.com", ""), names: vec!["usage".into()] });
    (v, vec![out_p12])
}

fn check_all(env: &Env, cases: &[Case], unwritten: &[std::path::PathBuf]) {
    let before = env.pki(["list"]).stdout;
    for c in cases {
        let names: Vec<&str> = c.names.iter().map(String::as_str).collect();
        let line = env.pki_fails(&c.args, &names);
        eprintln!("{:<60.60} -> {line}", c.args.join(" "));
    }
    assert_eq!(env.pki(["list"]).stdout, before, "a refused command changed the list");
    for f in unwritten {
        assert!(!f.exists(), "{} was written by a refused command", f.display());
    }
}

#[test]
fn bad_command_line_input_is_refused_with_one_error_line_naming_the_problem() {
    let env = Env::new();
    env.init();
    let key = gen_key(env.dir(), "ok.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("ok.csr"), "/CN=ivan@example.com", &[]);
    let out = env.pki(["issue", "--email", "ivan@example.com", "--usage", "signing", "--csr", &p(&csr)]);
    let serial = cert_serial(&pem_der(&out.stdout));
    let (cases, unwritten) = cases(&env, &serial);

    // Directly on the database.
    check_all(&env, &cases, &unwritten);
    // Through a running server.
    let server = env.serve();
    check_all(&env, &cases, &unwritten);
    server.stop();

    // The certificate the revocations above named is still valid.
    let show = env.pki(["show", "--serial", &serial]).stdout;
    assert!(show.contains("status:       valid"), "{show}");

    // A configuration file that does not exist, and one with an unknown setting.
    let missing = env.path("missing.toml");
    let out = run(pki_command().arg("--config").arg(&missing).arg("--data").arg(&env.data).arg("list"));
    let line = out.one_error_line();
    assert!(line.contains("configuration file") && line.contains(&p(&missing)), "{line}");
    let bad = env.write("bad.toml", "[ca]\npublic_base_url = \"ftp://example.com\"\n");
    let out = run(pki_command().arg("--config").arg(&bad).arg("--data").arg(&env.data).arg("list"));
    let line = out.one_error_line();
    assert!(line.contains("public_base_url") && line.contains("ftp://example.com"), "{line}");
    // Not a configuration: an endless device, and a long line quoted only in part.
    let out = run(pki_command().arg("--config").arg("/dev/zero").arg("--data").arg(&env.data).arg("list"));
    assert_eq!(out.one_error_line(), "error: configuration /dev/zero is larger than 1048576 bytes");
    let long = env.write("long.toml", format!("[ca]\n{}\n", "q".repeat(5000)));
    let out = run(pki_command().arg("--config").arg(&long).arg("--data").arg(&env.data).arg("list"));
    let line = out.one_error_line();
    assert!(line.contains(&format!("line 2 ({}…)", "q".repeat(80))) && line.len() < 300, "{line}");
    // Settings out of range or of the wrong type: the line and what was expected.
    for (file, text, command, wanted) in [
        ("zero.toml", "[server]\nworkers = 0\n", "serve", ["workers = 0", "expected 1 to 1024"]),
        ("tiny.toml", "[database]\ncache_mib = 1\n", "list", ["cache_mib = 1", "expected 16 to 1048576"]),
        (
            "text.toml",
            "[database]\ncache_mib = \"lots\"\n",
            "list",
            ["line 2 (cache_mib = \"lots\")", "expected u64"],
        ),
    ] {
        let config = env.write(file, text);
        let out = run(pki_command().arg("--config").arg(&config).arg("--data").arg(&env.data).arg(command));
        let line = out.one_error_line();
        assert!(wanted.iter().all(|w| line.contains(w)), "{file}: {line}");
    }

    // A data directory without a CA.
    let out =
        run(pki_command().arg("--config").arg(&env.config).arg("--data").arg(env.path("empty")).arg("list"));
    let line = out.one_error_line();
    assert!(line.contains("pki init"), "{line}");
}
