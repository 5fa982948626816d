//! Property-based fuzzing of ca-core's parsers: CSRs (`check_csr`, PEM or DER) and the `[ca]`
//! configuration (`CaConfig` from TOML, then `validate`). Valid messages mutated element by
//! element, truncated, oversized, and random bytes: an error or a value, never a panic, each
//! case within the time bound. `PROPTEST_CASES` sets the case count (see fuzz-support).
#![allow(clippy::unwrap_used)]

use ca_core::csr::check_csr;
use ca_core::CaConfig;
use cerdb::{EmailAddress, Usage};
use fuzz_support::proptest::prelude::*;
use fuzz_support::{der, text, Fuzz};

const EMAIL: &str = "alice@example.com";

fn csr(kp: &rcgen::KeyPair, san: bool) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, EMAIL);
    if san {
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(EMAIL.try_into().unwrap())];
    }
    params.serialize_request(kp).unwrap().der().to_vec()
}

/// Valid CSRs: P-256 and P-384 (CN only, and with a SAN), Ed25519.
fn valid_csrs() -> Vec<Vec<u8>> {
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    vec![csr(&p256, false), csr(&p256, true), csr(&p384, true), csr(&ed, false)]
}

/// DER inputs, and the same as PEM now and then (the parser takes both).
fn csr_inputs() -> BoxedStrategy<Vec<u8>> {
    let valid = valid_csrs();
    for v in &valid {
        check_csr(v, &EMAIL.parse().unwrap(), Usage::Signing, 2048).expect("the valid CSRs pass");
    }
    (der::inputs(valid), any::<bool>())
        .prop_map(
            |(d, as_pem)| {
                if as_pem {
                    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", d)).into_bytes()
                } else {
                    d
                }
            },
        )
        .boxed()
}

fn check_any_csr(input: &[u8], email: &EmailAddress) {
    for usage in [Usage::Signing, Usage::Encryption] {
        let _ = check_csr(input, email, usage, 2048);
    }
}

#[test]
fn csr_checks_never_panic() {
    let email: EmailAddress = EMAIL.parse().unwrap();
    Fuzz::new(env!("CARGO_MANIFEST_DIR"), "csr", 5000).run(csr_inputs(), |input| {
        check_any_csr(&input, &email);
        Ok(())
    });
}

/// A CSR reader with a planted bug (it trusts the length of the outer SEQUENCE) in front of the
/// real check: the CSR strategy must find it, report its seed and keep the case.
#[test]
fn a_panic_planted_in_the_csr_parser_is_found() {
    let email: EmailAddress = EMAIL.parse().unwrap();
    fuzz_support::assert_finds_planted_panic(
        "csr-planted",
        5000,
        csr_inputs(),
        |input: Vec<u8>| {
            if input.len() > 4 && input[0] == 0x30 && input[1] == 0x82 {
                let len = usize::from(u16::from_be_bytes([input[2], input[3]]));
                std::hint::black_box(&input[4..4 + len]);
            }
            check_any_csr(&input, &email);
            Ok(())
        },
        "out of range for slice",
    );
}

#[test]
fn ca_config_parsing_never_panics() {
    let default = toml::to_string(&CaConfig::default()).unwrap();
    let example = "public_base_url = \"https://pki.example.com\"\n\n[leaf]\nvalidity_days = 365\n\n\
                   [issuing]\nkey_type = \"p384\"\n\n[crl]\nnext_update_hours = 24\n"
        .to_string();
    let parsed: CaConfig = toml::from_str(&default).expect("the default configuration reads back");
    parsed.validate().expect("and is valid");
    Fuzz::new(env!("CARGO_MANIFEST_DIR"), "ca-config", 5000).run(
        text::toml_inputs(vec![default, example]),
        |input| {
            if let Ok(s) = std::str::from_utf8(&input) {
                if let Ok(c) = toml::from_str::<CaConfig>(s) {
                    let _ = c.validate();
                    let _ = c.validate_for_init();
                }
            }
            Ok(())
        },
    );
}
