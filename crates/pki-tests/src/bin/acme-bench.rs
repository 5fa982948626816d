//! `acme-bench BASE_URL EAB_FILE ORDERS_PER_ACCOUNT`: ACME orders finalized per second for
//! accounts whose authorizations are valid from the start (enterprise domain, `[acme]
//! enterprise_preauthorized`). One thread per line of EAB_FILE (`KID HMAC`): it creates its account
//! with External Account Binding, then for each order sends newOrder, finalize with a fresh P-256
//! CSR, and the certificate download — every request a JWS (ES256) with a fresh nonce. Prints the
//! orders completed, the wall time, orders per second and latency percentiles of a whole order.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

struct Client {
    agent: ureq::Agent,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    jwk: Value,
    kid: Option<String>,
    nonce: String,
    dir: Value,
}

struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Client {
    fn new(base: &str) -> Client {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
        let point = key.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])});
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let text = agent
            .get(&format!("{base}/acme/directory"))
            .call()
            .expect("directory")
            .body_mut()
            .read_to_string()
            .expect("directory");
        let dir: Value = serde_json::from_str(&text).expect("directory JSON");
        let nonce_url = dir["newNonce"].as_str().expect("newNonce").to_string();
        let resp = agent.head(&nonce_url).call().expect("nonce");
        let nonce = resp
            .headers()
            .get("replay-nonce")
            .and_then(|v| v.to_str().ok())
            .expect("Replay-Nonce")
            .to_string();
        Client { agent, key, rng, jwk, kid: None, nonce, dir }
    }

    fn jws(&self, url: &str, payload: &str, extra: Option<Value>) -> String {
        let mut protected = json!({"alg": "ES256", "nonce": self.nonce, "url": url});
        match &self.kid {
            Some(k) => protected["kid"] = json!(k),
            None => protected["jwk"] = self.jwk.clone(),
        }
        let p = b64(protected.to_string().as_bytes());
        let body = b64(payload.as_bytes());
        let sig = self.key.sign(&self.rng, format!("{p}.{body}").as_bytes()).expect("sign");
        let mut jws = json!({"protected": p, "payload": body, "signature": b64(sig.as_ref())});
        if let Some(Value::Object(m)) = extra {
            for (k, v) in m {
                jws[k] = v;
            }
        }
        jws.to_string()
    }

    fn post(&mut self, url: &str, payload: &str) -> Answer {
        let body = self.jws(url, payload, None);
        let mut resp = self
            .agent
            .post(url)
            .header("Content-Type", "application/jose+json")
            .send(body.as_bytes())
            .expect("POST");
        if let Some(n) = resp.headers().get("replay-nonce").and_then(|v| v.to_str().ok()) {
            self.nonce = n.to_string();
        }
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.body_mut().read_to_string().expect("body");
        Answer { status: resp.status().as_u16(), location, body }
    }

    fn account(&mut self, kid: &str, hmac: &str) {
        let url = self.dir["newAccount"].as_str().expect("newAccount").to_string();
        let protected = b64(json!({"alg": "HS256", "kid": kid, "url": url}).to_string().as_bytes());
        let payload = b64(self.jwk.to_string().as_bytes());
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &URL_SAFE_NO_PAD.decode(hmac).expect("HMAC key"));
        let mac = ring::hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
        let eab = json!({"protected": protected, "payload": payload, "signature": b64(mac.as_ref())});
        let a = self
            .post(&url, &json!({"termsOfServiceAgreed": true, "externalAccountBinding": eab}).to_string());
        assert_eq!(a.status, 201, "newAccount: {}", a.body);
        self.kid = a.location;
    }

    /// One whole order; panics on any refusal.
    fn order(&mut self, email: &str) {
        let url = self.dir["newOrder"].as_str().expect("newOrder").to_string();
        let a = self.post(&url, &json!({"identifiers": [{"type": "email", "value": email}]}).to_string());
        assert_eq!(a.status, 201, "newOrder: {}", a.body);
        let order: Value = serde_json::from_str(&a.body).expect("order");
        assert_eq!(order["status"], "ready", "authorizations valid from the start: {order}");
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(email.try_into().expect("address"))];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let csr = params.serialize_request(&kp).expect("CSR");
        let fin = order["finalize"].as_str().expect("finalize").to_string();
        let a = self.post(&fin, &json!({"csr": b64(csr.der())}).to_string());
        assert_eq!(a.status, 200, "finalize: {}", a.body);
        let done: Value = serde_json::from_str(&a.body).expect("order");
        let cert = done["certificate"].as_str().expect("certificate URL").to_string();
        let a = self.post(&cert, "");
        assert!(a.status == 200 && a.body.contains("BEGIN CERTIFICATE"), "certificate: {}", a.body);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, eab_file, per] = args.as_slice() else {
        eprintln!("usage: acme-bench BASE_URL EAB_FILE ORDERS_PER_ACCOUNT");
        std::process::exit(2);
    };
    let per: usize = per.parse().expect("ORDERS_PER_ACCOUNT is a number");
    let keys: Vec<(String, String)> = std::fs::read_to_string(eab_file)
        .expect("EAB file")
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(k, h)| (k.to_string(), h.trim().to_string())))
        .collect();
    let mut clients: Vec<Client> = keys
        .iter()
        .map(|(kid, hmac)| {
            let mut c = Client::new(base);
            c.account(kid, hmac);
            c
        })
        .collect();
    let start = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                s.spawn(move || {
                    (0..per)
                        .map(|n| {
                            let t = Instant::now();
                            c.order(&format!("bench{i}-{n}@example.com"));
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("client thread")).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut l = latencies;
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "accounts {}, orders {}, seconds {:.2}, orders/s {:.0}, order latency p50 {:.1} ms, p99 {:.1} ms",
        clients.len(),
        l.len(),
        secs,
        l.len() as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
}
