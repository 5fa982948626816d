//! The officer commands as data: the CLI builds a [`Request`], which runs either here against the
//! opened database or inside a running `pki serve` over the admin socket. Parsing and checking of
//! every argument happens in [`execute`], so output and errors are the same either way.

use std::fmt::Write as _;

use ca_core::{Ca, CaCert, InitOutcome, IssueRequest};
use cerdb::{CaId, EmailAddress, RevocationReason, Serial, Usage};
use serde::{Deserialize, Serialize};

/// One command with its arguments; file contents read by the client travel inline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// `pki init` (only reaches a running server, which is initialised already).
    Init,
    /// `pki issue`.
    Issue {
        /// Address.
        email: String,
        /// signing | encryption.
        usage: String,
        /// The CSR bytes (`--csr`).
        csr: Option<Vec<u8>>,
        /// `--generate`.
        generate: Option<Generate>,
    },
    /// `pki revoke`.
    Revoke {
        /// Serial in any spelling.
        serial: String,
        /// RFC 5280 reason name.
        reason: String,
    },
    /// `pki ca rekey`.
    CaRekey {
        /// ocsp | tsa.
        which: String,
    },
    /// `pki ca compromise`.
    CaCompromise {
        /// issuing | ocsp | tsa | tls.
        which: String,
        /// The typed confirmation.
        confirm: String,
    },
    /// `pki list`.
    List {
        /// Only this address.
        email: Option<String>,
    },
    /// `pki show`.
    Show {
        /// Serial.
        serial: String,
    },
    /// `pki crl`.
    Crl {
        /// root | issuing.
        ca: String,
    },
    /// `pki status`.
    Status,
    /// `pki ca-cert`.
    CaCert {
        /// root | issuing | ocsp | tsa.
        which: String,
    },
    /// `pki audit verify`.
    AuditVerify,
    /// `pki audit verify --checkpoint`.
    AuditVerifyCheckpoint {
        /// The checkpoint file's bytes.
        checkpoint: Vec<u8>,
    },
    /// `pki audit checkpoint`.
    AuditCheckpoint {
        /// Where the client writes it.
        out: String,
    },
    /// `pki ts stamp` against this data directory's TSA.
    TsStamp {
        /// The DER TimeStampReq.
        query: Vec<u8>,
        /// Where the client writes the reply.
        out: String,
    },
    /// `pki ts verify`.
    TsVerify {
        /// The token or reply.
        token: Vec<u8>,
        /// The data (from a client that sends it whole).
        data: Option<Vec<u8>>,
        /// Or its digests as the client computed them reading it: each algorithm's dotted OID and
        /// the digest in hex ([`tsa::DataDigests::values`]).
        #[serde(default)]
        data_digests: Option<Vec<(String, String)>>,
        /// Or its digest in hex, as the operator gave it.
        digest: Option<String>,
    },
    /// `pki ocsp presign`.
    OcspPresign {
        /// Absolute output directory (written by whoever executes the request).
        out: String,
    },
    /// `pki user add`.
    UserAdd {
        /// Account name.
        name: String,
        /// admin | officer | auditor.
        role: String,
    },
    /// `pki user list`.
    UserList,
    /// `pki user disable`.
    UserDisable {
        /// Account name.
        name: String,
    },
    /// `pki user enable`.
    UserEnable {
        /// Account name.
        name: String,
    },
    /// `pki user reset`.
    UserReset {
        /// Account name.
        name: String,
    },
    /// `pki user confirm-reset`.
    UserConfirmReset {
        /// Account name.
        name: String,
    },
    /// `pki escrow request`.
    EscrowAsk {
        /// Serial of the encryption certificate.
        serial: String,
        /// Why.
        reason: String,
    },
    /// `pki escrow approve`.
    EscrowApprove {
        /// The request id.
        id: String,
    },
    /// `pki escrow list`.
    EscrowList,
    /// `pki escrow recover`: the release of an approved request to its requester.
    EscrowRecover {
        /// The request id.
        id: String,
        /// Where the client writes the PKCS#12.
        p12_out: String,
        /// The PKCS#12 password.
        password: String,
    },
    /// `pki acme eab create`.
    AcmeEabCreate {
        /// Who the key is for.
        name: String,
    },
    /// `pki acme eab list`.
    AcmeEabList,
    /// `pki acme eab revoke`.
    AcmeEabRevoke {
        /// The key id.
        kid: String,
    },
    /// `pki validate send`.
    ValidateSend {
        /// The address.
        email: String,
    },
    /// `pki validate confirm`.
    ValidateConfirm {
        /// The address.
        email: String,
        /// The mailed value.
        code: String,
    },
    /// `pki validations list`.
    ValidationsList,
    /// `pki apikey create`.
    ApiKeyCreate {
        /// The client's name.
        name: String,
        /// Permissions beyond lookups (`mail`).
        #[serde(default)]
        permissions: Vec<String>,
        /// Lookups per second.
        rate: Option<f64>,
        /// Bucket capacity.
        burst: Option<f64>,
    },
    /// `pki apikey list`.
    ApiKeyList,
    /// `pki apikey revoke`.
    ApiKeyRevoke {
        /// The client's name.
        name: String,
    },
    /// `pki cerdb anonymous`.
    DirectoryAnonymous {
        /// Switch anonymous access on or off.
        enabled: Option<bool>,
        /// Lookups per second per IP.
        rate: Option<f64>,
        /// Bucket capacity.
        burst: Option<f64>,
    },
    /// `pki lookup` (without `--server`).
    Lookup {
        /// The address.
        email: String,
        /// signing | encryption.
        usage: String,
    },
    /// `pki mail sender ...`.
    MailSender(crate::mail::SenderRequest),
    /// One batch of `pki cerdb load-test-data`: (address, SubjectPublicKeyInfo DER) pairs, keys
    /// the loader generated.
    LoadTestBatch {
        /// signing | encryption.
        usage: String,
        /// The requests.
        keys: Vec<(String, Vec<u8>)>,
    },
}

/// `--generate` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generate {
    /// Key type name.
    pub key_type: Option<String>,
    /// Where the client writes the PKCS#12.
    pub p12_out: String,
    /// The PKCS#12 password.
    pub password: String,
}

/// A request and who makes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Audit actor.
    pub actor: String,
    /// The command.
    pub request: Request,
}

/// A file the client writes (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutFile {
    /// Path as given on the command line.
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// What a command printed and wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Standard output.
    pub stdout: String,
    /// Standard error (notes, not errors).
    pub stderr: String,
    /// Files to write.
    pub files: Vec<OutFile>,
}

/// A command's result: a reply, or one line saying what is wrong.
pub type Outcome = Result<Reply, String>;

fn serial(s: &str) -> Result<Serial, String> {
    s.parse::<Serial>().map_err(|e| e.to_string())
}

fn out(stdout: String) -> Outcome {
    Ok(Reply { stdout, ..Reply::default() })
}

/// Runs a request against an opened CA.
pub fn execute(ca: &Ca, env: &Envelope) -> Outcome {
    let actor = env.actor.as_str();
    let e = |err: ca_core::Error| err.to_string();
    match &env.request {
        Request::Init => out(format!(
            "{}{}",
            init_message(ca, InitOutcome::AlreadyInitialised),
            crate::users::first_admin(ca, actor)?
        )),
        Request::UserAdd { .. }
        | Request::UserList
        | Request::UserDisable { .. }
        | Request::UserEnable { .. }
        | Request::UserReset { .. }
        | Request::UserConfirmReset { .. } => crate::users::execute(ca, actor, &env.request),
        Request::EscrowAsk { .. }
        | Request::EscrowApprove { .. }
        | Request::EscrowList
        | Request::EscrowRecover { .. } => crate::escrow::execute(ca, actor, &env.request),
        Request::AcmeEabCreate { .. }
        | Request::AcmeEabList
        | Request::AcmeEabRevoke { .. }
        | Request::ValidateSend { .. }
        | Request::ValidateConfirm { .. }
        | Request::ValidationsList => {
            crate::enrolment::execute(ca, actor, &env.request, &crate::mail_relay::configured())
        }
        Request::Issue { email, usage, csr, generate } => {
            let email: EmailAddress = email.parse().map_err(|e: cerdb::Error| e.to_string())?;
            let usage: Usage = usage.parse().map_err(|e: cerdb::Error| e.to_string())?;
            match (csr, generate) {
                (Some(csr), None) => {
                    let issued = ca
                        .issue(&IssueRequest { email: email.clone(), usage, csr: csr.clone() }, actor)
                        .map_err(e)?;
                    Ok(Reply {
                        stdout: issued.pem(),
                        stderr: format!(
                            "issued {} certificate {} for {}\n",
                            usage, issued.record.serial, email
                        ),
                        files: vec![],
                    })
                }
                (None, Some(g)) => {
                    let kt = g
                        .key_type
                        .as_deref()
                        .map(|k| k.parse::<hsm_sim::KeyType>().map_err(|e| e.to_string()))
                        .transpose()?;
                    let (issued, p12) =
                        ca.issue_generated(&email, usage, kt, &g.password, actor).map_err(e)?;
                    Ok(Reply {
                        stdout: issued.pem(),
                        stderr: format!(
                            "issued {} certificate {} for {}; escrowed key and chain written to {}\n",
                            usage, issued.record.serial, email, g.p12_out
                        ),
                        files: vec![OutFile { path: g.p12_out.clone(), bytes: p12 }],
                    })
                }
                _ => Err("give exactly one of --csr FILE or --generate".into()),
            }
        }
        Request::Revoke { serial: s, reason } => {
            let s = serial(s)?;
            let reason: RevocationReason = reason.parse().map_err(|e: cerdb::Error| e.to_string())?;
            let done = ca.revoke(&s, reason, actor).map_err(e)?;
            let at =
                |r: &cerdb::CertRecord| r.revocation.as_ref().map(|r| r.at.to_rfc3339()).unwrap_or_default();
            let before = done.reason_before.map(|b| format!(", before: {b}")).unwrap_or_default();
            let mut text =
                format!("revoked {} ({reason}{before}) at {}\n", done.record.serial, at(&done.record));
            for other in &done.same_key {
                let _ = writeln!(
                    text,
                    "revoked {} ({reason}) at {}: the same key as {}",
                    other.serial,
                    at(other),
                    s
                );
            }
            out(text)
        }
        Request::CaRekey { which } => {
            let which: ca_core::OwnCert = which.parse()?;
            let rec = ca.rekey(which, actor).map_err(e)?;
            let (name, from_now) = match which {
                ca_core::OwnCert::Tsa => ("TSA", "timestamps are signed with it"),
                ca_core::OwnCert::Tls => ("TLS certificate", "HTTPS is served with it"),
                ca_core::OwnCert::Audit => ("audit signer", "audit checkpoints are signed with it"),
                _ => ("OCSP signer", "the responder signs with it"),
            };
            out(format!(
                "the {name} is now certificate {} (notAfter {}), with a new key in custody; {from_now} from now on\n",
                rec.serial,
                rec.not_after.to_rfc3339()
            ))
        }
        Request::CaCompromise { which, confirm } => {
            let which: ca_core::OwnCert = which.parse()?;
            let done = ca.compromise(which, confirm, actor).map_err(e)?;
            let at = done.record.revocation.as_ref().map(|r| r.at.to_rfc3339()).unwrap_or_default();
            let next = match which {
                ca_core::OwnCert::Ocsp => "; `pki ca rekey --ca ocsp` puts a new OCSP signer in use",
                ca_core::OwnCert::Tsa => "; `pki ca rekey --ca tsa` puts a new TSA in use",
                ca_core::OwnCert::Tls => "; `pki ca rekey --ca tls` puts a new TLS certificate in use",
                ca_core::OwnCert::Audit => "; `pki ca rekey --ca audit` puts a new audit signer in use",
                ca_core::OwnCert::Issuing => "",
            };
            out(format!(
                "revoked the {which} certificate {} ({}) at {at}; nothing is issued or signed under it any more{next}\n",
                done.record.serial,
                which.reason()
            ))
        }
        Request::List { email } => {
            let email =
                email.as_deref().map(|s| s.parse::<EmailAddress>().map_err(|e| e.to_string())).transpose()?;
            let now = ca.now();
            let withdrawn = ca.db().withdrawn_issuers();
            let mut s = format!(
                "{:<34} {:<11} {:<13} {:<20} {}\n",
                "SERIAL", "KIND", "STATUS", "NOT AFTER", "E-MAIL"
            );
            for r in ca.list(email.as_ref()).map_err(e)? {
                let _ = writeln!(
                    s,
                    "{:<34} {:<11} {:<13} {:<20} {}",
                    r.serial.to_string(),
                    r.kind.name(),
                    withdrawn.status_of(&r, now).name(),
                    r.not_after.format("%Y-%m-%dT%H:%M:%SZ"),
                    r.email.as_ref().map(|e| e.as_str()).unwrap_or("-"),
                );
            }
            out(s)
        }
        Request::Show { serial: s } => {
            let r = ca.show(&serial(s)?).map_err(e)?;
            let mut s = String::new();
            let _ = writeln!(s, "serial:       {}", r.serial);
            let _ = writeln!(s, "kind:         {}", r.kind.name());
            let withdrawn = ca.db().withdrawn_issuers();
            let _ = writeln!(s, "status:       {}", withdrawn.status_of(&r, ca.now()).name());
            if let Some(rev) = &r.revocation {
                let _ = writeln!(s, "revoked:      {} ({})", rev.at.to_rfc3339(), rev.reason);
            } else if let Some(rev) = withdrawn.inherited_revocation(&r) {
                let _ = writeln!(
                    s,
                    "revoked:      {} ({}: its issuer, the {} CA, was compromised)",
                    rev.at.to_rfc3339(),
                    rev.reason,
                    r.issuer
                );
            }
            let _ = writeln!(s, "e-mail:       {}", r.email.as_ref().map(|e| e.as_str()).unwrap_or("-"));
            let _ = writeln!(s, "subject:      {}", r.subject);
            let _ = writeln!(s, "issuer:       {}", r.issuer);
            let _ = writeln!(s, "not before:   {}", r.not_before.to_rfc3339());
            let _ = writeln!(s, "not after:    {}", r.not_after.to_rfc3339());
            let _ = writeln!(s, "key:          {}", r.key_type);
            let _ = writeln!(s, "escrowed:     {}", if r.escrow_key.is_some() { "yes" } else { "no" });
            let _ = writeln!(s, "sha256:       {}", r.fingerprint);
            s.push_str(&ca_core::to_pem("CERTIFICATE", &r.der));
            out(s)
        }
        Request::Crl { ca: which } => {
            let id = match which.as_str() {
                "issuing" => CaId::Issuing,
                "root" => CaId::Root,
                other => return Err(format!("unknown CA {other:?}: expected issuing or root")),
            };
            let crl = ca.crl(id).map_err(e)?;
            out(ca_core::to_pem("X509 CRL", &crl.der))
        }
        Request::CaCert { which } => {
            let w: CaCert = which.parse()?;
            out(ca_core::to_pem("CERTIFICATE", &ca.ca_cert(w)))
        }
        Request::Status => out(status_report(ca).map_err(e)?),
        Request::AuditVerify => {
            let r = ca.audit_report(None).map_err(e)?;
            Ok(Reply {
                stdout: format!("audit log verified: {} entries, hash chain intact\n", r.entries),
                // A note, on standard error: the line above is what scripts read.
                stderr: crate::audit_checkpoints::legacy_line(r.legacy),
                files: vec![],
            })
        }
        Request::AuditVerifyCheckpoint { checkpoint } => {
            out(crate::audit_checkpoints::verify(ca, checkpoint)?)
        }
        Request::AuditCheckpoint { out: path } => {
            let (der, cp) = crate::audit_checkpoints::make(ca, actor, &format!("--out {path}"))
                .map_err(|e| format!("{e:#}"))?;
            Ok(Reply {
                stdout: format!(
                    "audit checkpoint of entry {} (head {}) written to {path}\n",
                    cp.seq, cp.head_hash
                ),
                stderr: String::new(),
                files: vec![OutFile { path: path.clone(), bytes: der }],
            })
        }
        Request::TsStamp { query, out: path } => {
            let authority = crate::context::tsa(ca).map_err(|e| format!("{e:#}"))?;
            let reply = authority.respond(query);
            let summary = crate::timestamp::summary(&reply)?;
            Ok(Reply {
                stdout: format!("{summary}\ntimestamp reply written to {path}\n"),
                stderr: String::new(),
                files: vec![OutFile { path: path.clone(), bytes: reply }],
            })
        }
        Request::TsVerify { token, data, data_digests, digest } => {
            let verifier = crate::context::tsa_verifier(ca).map_err(|e| format!("{e:#}"))?;
            let digest_bytes = digest
                .as_deref()
                .map(|h| hex::decode(h.trim()).map_err(|_| format!("--digest {h:?} is not hex")))
                .transpose()?;
            let values = data_digests
                .as_ref()
                .map(|v| {
                    v.iter()
                        .map(|(oid, h)| {
                            Ok((oid.clone(), hex::decode(h).map_err(|_| "a data digest is not hex")?))
                        })
                        .collect::<Result<Vec<_>, String>>()
                })
                .transpose()?;
            let subject = match (data, &values, &digest_bytes) {
                (Some(d), None, None) => tsa::Timestamped::Data(d),
                (None, Some(v), None) => tsa::Timestamped::Digests(v),
                (None, None, Some(d)) => tsa::Timestamped::Digest(d),
                _ => return Err("give exactly one of --data FILE or --digest HEX".into()),
            };
            let v =
                verifier.verify(token, subject).map_err(|e| format!("timestamp verification failed: {e}"))?;
            out(format!(
                "verification: OK\ngenTime: {}\npolicy: {}\nserial: {}\ntsa: {}\nhash: {}\n",
                v.gen_time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                v.policy,
                v.serial,
                v.tsa_name,
                v.hash_algorithm
            ))
        }
        Request::OcspPresign { out: dir } => {
            let responder = crate::context::ocsp_responder(ca).map_err(|e| format!("{e:#}"))?;
            let db = ca.db();
            let serials = ocsp_responder::issued_serials(db).map_err(|e| e.to_string())?;
            let report = responder
                .presign(&serials, std::path::Path::new(dir), ca.now())
                .map_err(|e| e.to_string())?;
            out(format!(
                "pre-signed OCSP responses in {dir}: {} written, {} unchanged\n",
                report.written.len(),
                report.unchanged.len()
            ))
        }
        Request::ApiKeyCreate { name, rate, burst, permissions } => {
            crate::directory::apikey_create(ca, name, *rate, *burst, permissions, actor)
        }
        Request::MailSender(r) => crate::mail::execute(ca, r, actor),
        Request::ApiKeyList => crate::directory::apikey_list(ca),
        Request::ApiKeyRevoke { name } => crate::directory::apikey_revoke(ca, name, actor),
        Request::DirectoryAnonymous { enabled, rate, burst } => {
            crate::directory::anonymous(ca, *enabled, *rate, *burst, actor)
        }
        Request::Lookup { email, usage } => crate::directory::lookup_local(ca, email, usage),
        Request::LoadTestBatch { usage, keys } => crate::directory::load_batch(ca, usage, keys, actor),
    }
}

/// What `pki init` prints.
pub fn init_message(ca: &Ca, outcome: InitOutcome) -> String {
    let mut s = match outcome {
        InitOutcome::Created => "CA initialised\n".to_string(),
        InitOutcome::AlreadyInitialised => "CA already initialised; nothing changed\n".to_string(),
    };
    for (name, which) in
        [("root", CaCert::Root), ("issuing", CaCert::Issuing), ("ocsp", CaCert::Ocsp), ("tsa", CaCert::Tsa)]
    {
        let der = ca.ca_cert(which);
        let fp = cerdb::Fingerprint::of(&der);
        let _ = writeln!(s, "{name:<8} sha256:{fp}");
    }
    s
}

/// What `pki status` prints: one line per CA-side certificate, then one per certificate that
/// needs attention.
pub fn status_report(ca: &Ca) -> Result<String, ca_core::Error> {
    let certs = ca.own_certificates()?;
    // As wide as the longest name (a sender identity's, `mail-sender:NAME`).
    let w = certs.iter().map(|c| c.name.len()).max().unwrap_or(0).max(8);
    let mut s = format!(
        "{:<w$} {:<34} {:<20} {:>9} {:>7}  state\n",
        "cert", "serial", "not after", "days left", "warn at"
    );
    for c in &certs {
        let _ = writeln!(
            s,
            "{:<w$} {:<34} {:<20} {:>9} {:>7}  {}",
            c.name,
            c.serial.to_string(),
            c.not_after.format("%Y-%m-%d %H:%M:%SZ"),
            c.days_left,
            c.warning_days,
            c.state.name()
        );
    }
    for c in certs.iter().filter(|c| c.state.needs_attention()) {
        let _ = writeln!(s, "attention: {}", attention(c));
    }
    Ok(s)
}

/// One line on a CA-side certificate that needs attention.
pub fn attention(c: &ca_core::OwnCertStatus) -> String {
    match c.state {
        ca_core::ExpiryState::Revoked => format!("the {} certificate {} is revoked", c.name, c.serial),
        ca_core::ExpiryState::Expired => {
            format!("the {} certificate {} expired on {}", c.name, c.serial, c.not_after)
        }
        _ => format!(
            "the {} certificate {} ends in {} days ({}), within its {}-day warning window",
            c.name, c.serial, c.days_left, c.not_after, c.warning_days
        ),
    }
}
