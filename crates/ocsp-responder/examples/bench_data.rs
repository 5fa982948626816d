//! Test data for the OCSP benchmark (`bench/ocsp/run.sh`): issues N certificates into a `pki`
//! data directory through the CA's bulk path, and writes what the load generator and OpenSSL's
//! responder need.
//!
//! ```text
//! cargo run --release -p ocsp-responder --example bench_data -- DATA_DIR OUT_DIR [COUNT]
//! ```
//!
//! * `DATA_DIR`: a `pki` data directory (created, or opened if `pki init` made it; the key store
//!   must use the default master key file, as `pki` does without a passphrase).
//! * `OUT_DIR/serials.txt`: one line per certificate, the hex content octets of its DER serial
//!   INTEGER (what goes into an OCSP CertID).
//! * `OUT_DIR/index.txt` (+ `index.txt.attr`): the same certificates as an `openssl ca` index, for
//!   `openssl ocsp -index`.
//! * `OUT_DIR/issuing.pem`: the issuing CA certificate.
//!
//! Certificates are issued with `Ca::issue_many` in batches of 500 (one flush per batch, CSR checks
//! and signing on every core). All CSRs of a batch share one P-256 key: the status benchmark does
//! not look at subscriber keys, and generating 100,000 keys would only slow the setup.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ca_core::{to_pem, Ca, CaCert, CaConfig, IssueRequest, SystemClock};
use cerdb::{CertDb, Usage};
use hsm_sim::{HsmSim, MasterKeySource};

const BATCH: usize = 500;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(data), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: bench_data DATA_DIR OUT_DIR [COUNT]".into());
    };
    let count: usize = args.get(2).map(|c| c.parse()).transpose()?.unwrap_or(100_000);
    let (data, out) = (PathBuf::from(data), PathBuf::from(out));
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&out)?;

    let db = CertDb::open(data.join("db"))?;
    let hsm = Arc::new(HsmSim::open(data.join("keys"), &MasterKeySource::KeyFile)?);
    let (ca, _) = Ca::init(db, hsm, CaConfig::default(), Arc::new(SystemClock), "bench")?;
    std::fs::write(out.join("issuing.pem"), to_pem("CERTIFICATE", &ca.ca_cert(CaCert::Issuing)))?;

    let start = Instant::now();
    let mut serials = String::with_capacity(count * 36);
    let mut index = String::with_capacity(count * 100);
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let reqs = (done..done + n)
            .map(|i| {
                let email = format!("bench{i}@example.com");
                let mut params = rcgen::CertificateParams::default();
                params.distinguished_name = rcgen::DistinguishedName::new();
                params.distinguished_name.push(rcgen::DnType::CommonName, email.clone());
                let csr = params.serialize_request(&key)?.der().to_vec();
                Ok(IssueRequest { email: email.parse()?, usage: Usage::Signing, csr })
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        for issued in ca.issue_many(&reqs, "bench")? {
            let rec = &issued.record;
            writeln!(serials, "{}", hex::encode(rec.serial.to_der_content()))?;
            // status, expiry (UTCTime), revocation (none), serial, file name, subject
            writeln!(
                index,
                "V\t{}\t\t{}\tunknown\t/CN={}",
                rec.not_after.format("%y%m%d%H%M%SZ"),
                rec.serial,
                rec.email.as_ref().map(|e| e.as_str()).unwrap_or("-")
            )?;
        }
        done += n;
        if done % 10_000 == 0 || done == count {
            let secs = start.elapsed().as_secs_f64();
            eprintln!("bench_data: {done}/{count} certificates, {:.0}/s", done as f64 / secs);
        }
    }
    std::fs::write(out.join("serials.txt"), serials)?;
    std::fs::write(out.join("index.txt"), index)?;
    std::fs::write(out.join("index.txt.attr"), "unique_subject = no\n")?;
    ca.db().check_consistency()?;
    Ok(())
}
