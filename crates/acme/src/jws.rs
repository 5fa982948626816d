//! JSON Web Signatures as ACME uses them (RFC 8555 §6.2): the flattened JSON serialisation, one
//! signature, a protected header with `alg`, `nonce`, `url` and either `jwk` or `kid`; keys as
//! JSON Web Keys (RFC 7517) of the three algorithms the server accepts — ES256 (P-256), RS256 and
//! EdDSA (Ed25519) — verified by `ring`; key thumbprints (RFC 7638); the HS256 MAC of External
//! Account Binding.
//!
//! Hand-written because the Rust JOSE crates either verify compact tokens only (JWTs) or bring an
//! OpenSSL binding: what is here is the decoding of three small JSON shapes around `ring`'s
//! verification.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature;
use serde::Deserialize;
use serde_json::Value;

use crate::problem::Problem;

/// Decodes base64url without padding (the only form JOSE allows).
pub fn b64d(text: &str, what: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| Problem::malformed(format!("{what} is not base64url")))
}

/// Encodes as base64url without padding.
pub fn b64e(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The flattened JSON serialisation of a JWS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlattenedJws {
    /// base64url of the protected header.
    pub protected: String,
    /// base64url of the payload (empty for POST-as-GET).
    pub payload: String,
    /// base64url of the signature.
    pub signature: String,
}

/// The protected header of a request.
#[derive(Debug, Clone, Deserialize)]
pub struct Protected {
    /// The algorithm.
    pub alg: String,
    /// The replay nonce (absent only in inner JWS of key rollover and EAB).
    pub nonce: Option<String>,
    /// The URL the request was sent to.
    pub url: Option<String>,
    /// The key, for requests not by an account.
    pub jwk: Option<Value>,
    /// The account URL.
    pub kid: Option<String>,
}

/// A JWS parsed, not yet verified.
#[derive(Debug)]
pub struct ParsedJws {
    /// The header.
    pub header: Protected,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// What the signature covers: `protected || '.' || payload`, as sent.
    pub signing_input: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

/// Parses a flattened JWS (from a JSON value or bytes).
pub fn parse(value: Value) -> Result<ParsedJws, Problem> {
    let jws: FlattenedJws = serde_json::from_value(value).map_err(|e| {
        Problem::malformed(format!("not a flattened JWS (protected, payload, signature): {e}"))
    })?;
    let header_bytes = b64d(&jws.protected, "the protected header")?;
    let header: Protected = serde_json::from_slice(&header_bytes)
        .map_err(|e| Problem::malformed(format!("the protected header is not a JOSE header: {e}")))?;
    let payload = b64d(&jws.payload, "the payload")?;
    let signature = b64d(&jws.signature, "the signature")?;
    let signing_input = format!("{}.{}", jws.protected, jws.payload).into_bytes();
    Ok(ParsedJws { header, payload, signing_input, signature })
}

/// A public key of an account, from its JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwk {
    /// P-256: the uncompressed point.
    P256 {
        /// base64url x.
        x: String,
        /// base64url y.
        y: String,
    },
    /// RSA.
    Rsa {
        /// base64url modulus.
        n: String,
        /// base64url exponent.
        e: String,
    },
    /// Ed25519.
    Ed25519 {
        /// base64url public key.
        x: String,
    },
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, Problem> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::bad_public_key(format!("the JWK has no {name}")))
}

impl Jwk {
    /// From a JSON Web Key; other key types and curves are `badPublicKey`.
    pub fn from_json(v: &Value) -> Result<Jwk, Problem> {
        match field(v, "kty")? {
            "EC" => {
                let crv = field(v, "crv")?;
                if crv != "P-256" {
                    return Err(Problem::bad_public_key(format!(
                        "EC curve {crv:?}: only P-256 (ES256) is accepted"
                    )));
                }
                let (x, y) = (field(v, "x")?, field(v, "y")?);
                for (n, c) in [("x", x), ("y", y)] {
                    if b64d(c, n)?.len() != 32 {
                        return Err(Problem::bad_public_key(format!("the P-256 JWK's {n} is not 32 bytes")));
                    }
                }
                Ok(Jwk::P256 { x: x.into(), y: y.into() })
            }
            "RSA" => {
                let (n, e) = (field(v, "n")?, field(v, "e")?);
                let bits = b64d(n, "n")?.iter().skip_while(|b| **b == 0).count() * 8;
                if !(2048..=8192).contains(&bits) {
                    return Err(Problem::bad_public_key(format!(
                        "an RSA key of about {bits} bits: 2048 to 8192 are accepted"
                    )));
                }
                b64d(e, "e")?;
                Ok(Jwk::Rsa { n: n.into(), e: e.into() })
            }
            "OKP" => {
                let crv = field(v, "crv")?;
                if crv != "Ed25519" {
                    return Err(Problem::bad_public_key(format!(
                        "OKP curve {crv:?}: only Ed25519 is accepted"
                    )));
                }
                let x = field(v, "x")?;
                if b64d(x, "x")?.len() != 32 {
                    return Err(Problem::bad_public_key("the Ed25519 JWK's x is not 32 bytes".into()));
                }
                Ok(Jwk::Ed25519 { x: x.into() })
            }
            other => Err(Problem::bad_public_key(format!(
                "key type {other:?}: EC P-256, RSA or Ed25519 are accepted"
            ))),
        }
    }

    /// The JWK with its required members only, as JSON (what is stored).
    pub fn to_json(&self) -> Value {
        match self {
            Jwk::P256 { x, y } => serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
            Jwk::Rsa { n, e } => serde_json::json!({"kty": "RSA", "n": n, "e": e}),
            Jwk::Ed25519 { x } => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
        }
    }

    /// The RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order, without
    /// whitespace; base64url.
    pub fn thumbprint(&self) -> String {
        let canonical = match self {
            Jwk::P256 { x, y } => format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
            Jwk::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            Jwk::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
        };
        b64e(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> &'static str {
        match self {
            Jwk::P256 { .. } => "ES256",
            Jwk::Rsa { .. } => "RS256",
            Jwk::Ed25519 { .. } => "EdDSA",
        }
    }

    /// Whether a certificate's subject public key is this key.
    pub fn matches_spki(&self, spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> bool {
        let raw = spki.subject_public_key.data.as_ref();
        match self {
            Jwk::P256 { x, y } => {
                let (Ok(x), Ok(y)) = (b64d(x, "x"), b64d(y, "y")) else { return false };
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                point == raw
            }
            Jwk::Ed25519 { x } => b64d(x, "x").is_ok_and(|x| x == raw),
            Jwk::Rsa { n, e } => {
                let (Ok(n), Ok(e)) = (b64d(n, "n"), b64d(e, "e")) else { return false };
                match spki.parsed() {
                    Ok(x509_parser::public_key::PublicKey::RSA(k)) => {
                        strip(k.modulus) == strip(&n) && strip(k.exponent) == strip(&e)
                    }
                    _ => false,
                }
            }
        }
    }

    /// Verifies `sig` over `input` with `alg` (which must be this key's).
    pub fn verify(&self, alg: &str, input: &[u8], sig: &[u8]) -> Result<(), Problem> {
        if alg != self.alg() {
            return Err(Problem::bad_signature_algorithm(format!(
                "alg {alg:?} does not fit the key (a {} key signs with {})",
                match self {
                    Jwk::P256 { .. } => "P-256",
                    Jwk::Rsa { .. } => "RSA",
                    Jwk::Ed25519 { .. } => "Ed25519",
                },
                self.alg()
            )));
        }
        let bad = |_| Problem::malformed("the JWS signature does not verify".into());
        match self {
            Jwk::P256 { x, y } => {
                let mut point = vec![4u8];
                point.extend_from_slice(&b64d(x, "x")?);
                point.extend_from_slice(&b64d(y, "y")?);
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input, sig)
                    .map_err(bad)
            }
            Jwk::Rsa { n, e } => {
                let key = signature::RsaPublicKeyComponents { n: b64d(n, "n")?, e: b64d(e, "e")? };
                key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, sig).map_err(bad)
            }
            Jwk::Ed25519 { x } => signature::UnparsedPublicKey::new(&signature::ED25519, b64d(x, "x")?)
                .verify(input, sig)
                .map_err(bad),
        }
    }
}

fn strip(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

/// The algorithms accepted, for `badSignatureAlgorithm` problems.
pub const ALGORITHMS: [&str; 3] = ["ES256", "RS256", "EdDSA"];

/// Checks an HS256 MAC (External Account Binding) with `key`.
pub fn verify_hs256(key: &[u8], input: &[u8], mac: &[u8]) -> bool {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, input, mac).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thumbprint_of_rfc7638_example() {
        // RFC 7638 §3.1.
        let jwk = serde_json::json!({"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"});
        let k = Jwk::from_json(&jwk).unwrap();
        assert_eq!(k.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn bad_keys_and_bodies_are_problems() {
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"kty":"EC","crv":"P-521","x":"AA","y":"AA"}),
            serde_json::json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA"}),
            serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB"}),
            serde_json::json!({"kty":"oct","k":"AA"}),
            serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"!!"}),
        ] {
            assert!(Jwk::from_json(&bad).is_err(), "{bad}");
        }
        for bad in [
            serde_json::json!(1),
            serde_json::json!({"protected":"e30","payload":"","signature":"@"}),
            serde_json::json!({"protected":"bm90IGpzb24","payload":"","signature":""}),
            serde_json::json!({"protected":"e30","payload":"","signature":"","extra":1}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_ed25519_signature_verifies_and_a_changed_one_does_not() {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = Jwk::Ed25519 { x: b64e(kp.public_key().as_ref()) };
        let sig = kp.sign(b"input");
        jwk.verify("EdDSA", b"input", sig.as_ref()).unwrap();
        assert!(jwk.verify("EdDSA", b"inpuT", sig.as_ref()).is_err());
        assert!(jwk.verify("ES256", b"input", sig.as_ref()).is_err());
    }
}
