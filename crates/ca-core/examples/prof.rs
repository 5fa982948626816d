use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use std::time::Instant;
fn main() {
    let rng = ring::rand::SystemRandom::new();
    let pk = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pk.as_ref(), &rng).unwrap();
    let n = 20000;
    let t = Instant::now();
    let mut sig = Vec::new();
    for _ in 0..n {
        sig = kp.sign(&rng, b"hello world message to sign").unwrap().as_ref().to_vec();
    }
    println!("ring sign/s {:.0}", n as f64 / t.elapsed().as_secs_f64());
    let pubk = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, kp.public_key().as_ref().to_vec());
    let t = Instant::now();
    for _ in 0..n {
        pubk.verify(b"hello world message to sign", &sig).unwrap();
    }
    println!("ring verify/s {:.0}", n as f64 / t.elapsed().as_secs_f64());
    let kp2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "a@example.com");
    let csr = params.serialize_request(&kp2).unwrap().der().to_vec();
    let email: cerdb::EmailAddress = "a@example.com".parse().unwrap();
    let t = Instant::now();
    for _ in 0..5000 {
        ca_core::csr::check_csr(&csr, &email, cerdb::Usage::Signing, 2048).unwrap();
    }
    println!("check_csr/s {:.0}", 5000.0 / t.elapsed().as_secs_f64());
}
