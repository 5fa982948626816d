//! `seal_core_rate [SECONDS]`: the CPU one message's sealing core takes on one thread, as
//! [`sealed_mail::Sealer`] makes it — the statement's entity (2 KB of text and a 100 KB PDF)
//! written, encrypted (AES-256-CBC) while it is hashed, its digest signed by a sender key in the
//! key custody (`HsmSim`, RSA-2048 and P-256), the signature part appended and encrypted, the key
//! sent to an RSA-2048 or a P-256 certificate — and nothing else: no HTTP, JSON, request base64,
//! timestamp, audit entry or message framing.
//! `bench/seal.sh` prints from it the most messages a second the sealing core alone allows on the
//! machine's cores, beside what the service makes.
//!
//! Prints one line: `SEAL_CORE entity_bytes=N seal_rsa_rsa_us=.. seal_rsa_p256_us=..
//! seal_p256_rsa_us=.. seal_p256_p256_us=..` (sender key, then recipient), each the mean wall
//! time on one otherwise idle thread.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark program: a failure ends it

use std::time::{Duration, Instant};

use hsm_sim::{HsmSim, KeyCustody, KeyHandle, KeyPurpose, KeyType, MasterKeySource};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sealed_mail::envelope::{CbcSealing, Recipient};
use sealed_mail::mime::{self, Attachment, Content, HeaderText, MediaType};
use sealed_mail::signed::{sign_detached_digest, EntityDigest};
use sealed_mail::SenderKey;

// The allocator of `pki` (src/main.rs): messages are buffers of a few hundred kilobytes, which
// the system allocator maps and unmaps for each one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mean time of `f` over repeated calls for about `run` (after one call to warm up).
fn mean(run: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let (start, mut n) = (Instant::now(), 0u32);
    while start.elapsed() < run {
        f();
        n += 1;
    }
    start.elapsed() / n.max(1)
}

/// A certificate for the public key `spki` (DER), issued by `ca`.
fn certificate(spki: &[u8], cn: &str, ca: &Issuer<'_, KeyPair>) -> Vec<u8> {
    let spki = rcgen::SubjectPublicKeyInfo::from_der(spki).expect("spki");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.signed_by(&spki, ca).expect("certificate").der().to_vec()
}

fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(3.0, |s| s.parse().expect("SECONDS: a number"));
    let run = Duration::from_secs_f64(secs / 4.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let hsm = HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("custody");
    let generate = |name: &str, key_type: KeyType, purpose: KeyPurpose| {
        let handle: KeyHandle = name.parse().expect("handle");
        let public = hsm.generate(&handle, key_type, purpose).expect("generate");
        (handle, public.spki)
    };

    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.distinguished_name.push(DnType::CommonName, "Bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_der = ca_params.self_signed(&ca_key).expect("CA").der().to_vec();
    let ca = Issuer::new(ca_params, ca_key);

    let senders = [KeyType::Rsa2048, KeyType::P256].map(|kt| {
        let (handle, spki) = generate(&format!("mail/sender-{}", kt.name()), kt, KeyPurpose::MailSigning);
        let cert = certificate(&spki, "statements@bank.example", &ca);
        SenderKey::new(hsm.signer(&handle).expect("signer"), vec![cert, ca_der.clone()]).expect("sender key")
    });
    // Recipients' public keys: escrow keys of the custody, only their certificates are used.
    let recipients = [KeyType::Rsa2048, KeyType::P256].map(|kt| {
        let (_, spki) = generate(&format!("escrow/recipient-{}", kt.name()), kt, KeyPurpose::Escrow);
        Recipient::from_der(&certificate(&spki, "customer@example.com", &ca)).expect("recipient")
    });

    let text = "Dear customer, your statement for this month is attached. ".repeat(36)[..2048].to_string();
    let pdf: Vec<u8> =
        b"%PDF-1.7\n".iter().copied().chain((0..100 * 1024 - 9).map(|i| (i * 131 % 251) as u8)).collect();
    let content = Content {
        text,
        html: None,
        attachments: vec![Attachment::new(
            HeaderText::parse("filename", "statement.pdf", 255).expect("filename"),
            MediaType::parse("application/pdf").expect("media type"),
            &pdf,
        )],
    };
    let random = [7u8; 16];
    let now = chrono::Utc::now();
    // What the sealer does for each message, from its content to the enveloped DER: the
    // `multipart/signed` written, encrypted while its entity is hashed, the digest signed in
    // custody, the signature part appended and encrypted, the key sent to the recipient.
    let seal = |sender: &SenderKey, to: &Recipient| {
        let digest = EntityDigest::of(sender);
        let entity = mime::SignedEntity::new(&content, &random, digest.micalg());
        let (bytes, entity_start, closing) = entity.into_parts();
        let mut hasher = digest.hasher();
        let cbc = CbcSealing::begin(bytes, entity_start, &mut hasher).expect("begin");
        let signed = sign_detached_digest(&hasher.finish(), sender, now)
            .expect("sign")
            .finish(sender, None)
            .expect("finish");
        cbc.finish(|b| closing.append(&signed.der, b), &[to]).expect("envelop")
    };
    let entity_bytes = mime::SignedEntity::new(&content, &random, "sha-256").entity().len();
    let mut fields = format!("SEAL_CORE entity_bytes={entity_bytes}");
    for (s, sender) in ["rsa", "p256"].iter().zip(&senders) {
        for (r, to) in ["rsa", "p256"].iter().zip(&recipients) {
            let us = mean(run, || drop(seal(sender, to))).as_micros();
            fields.push_str(&format!(" seal_{s}_{r}_us={us}"));
        }
    }
    println!("{fields}");
}
