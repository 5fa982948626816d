//! Pre-signed responses for a static web server or CDN (RFC 5019 §2.2.1: responses may be
//! produced ahead of the request).
//!
//! ## Layout of the directory
//!
//! * `<SERIAL>.der` — one DER `OCSPResponse` per certificate, where `<SERIAL>` is the serial in
//!   upper-case hex of even length, as cerdb and `openssl x509 -serial` print it (e.g.
//!   `1A2B.der`). Its single CertID is hashed with SHA-1, as RFC 5019 §2.1.1 has clients do
//!   (and `openssl ocsp` does by default); it carries no nonce. Serve it as
//!   `application/ocsp-response`.
//! * [`PRESIGN_INDEX_FILE`] (`index.txt`) — one line per `.der` file in the directory:
//!   `<GET path segment> TAB <file name>`, where the segment is the URL-encoded base64 of the DER
//!   request an RFC 5019 client sends for that serial (RFC 6960 appendix A.1). A CDN or web server
//!   maps `GET /ocsp/<segment>` to the file with it (a rewrite map, or objects uploaded under that
//!   key). Requests with a nonce, several CertIDs or SHA-256 CertIDs do not match a file and
//!   belong to the live responder.
//!
//! Files are replaced atomically (written beside, then renamed). A re-run rewrites a file only
//! when its status differs from cerdb's, its nextUpdate is nearer than
//! [`crate::OcspConfig::refresh_margin`], it was signed by another signer certificate, or it
//! cannot be read; the others are left untouched.

use std::fs;
use std::path::Path;

use base64::Engine as _;
use cerdb::{CaId, CertDb, Serial};
use chrono::{DateTime, Utc};
use der::{Decode, Encode};
use x509_ocsp::{
    BasicOcspResponse, OcspRequest, OcspResponse, OcspResponseStatus, Request, TbsRequest, Version,
};

use crate::issuer::CertIdHash;
use crate::responder::SingleStatus;
use crate::{Error, OcspResponder};

/// The name of the index written beside the pre-signed files.
pub const PRESIGN_INDEX_FILE: &str = "index.txt";

/// What a pre-signing run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresignReport {
    /// Serials whose file was written (new, changed or near expiry).
    pub written: Vec<Serial>,
    /// Serials whose file was still good and left as it was.
    pub unchanged: Vec<Serial>,
    /// Serials the issuing CA never issued: no file.
    pub not_issued: Vec<Serial>,
}

/// The serials of every certificate the issuing CA issued, for pre-signing them all.
pub fn issued_serials(db: &CertDb) -> Result<Vec<Serial>, Error> {
    Ok(db.list(None)?.into_iter().filter(|r| r.issuer == CaId::Issuing).map(|r| r.serial).collect())
}

impl OcspResponder {
    /// The file name of the pre-signed response of `serial`: `<SERIAL>.der`.
    pub fn presign_file_name(serial: &Serial) -> String {
        format!("{serial}.der")
    }

    /// The path segment after `/ocsp/` of the GET request an RFC 5019 client sends for `serial`:
    /// the URL-encoded base64 of a DER `OCSPRequest` with one SHA-1 CertID and no extensions.
    pub fn rfc5019_get_path(&self, serial: &Serial) -> Result<String, Error> {
        let req = OcspRequest {
            tbs_request: TbsRequest {
                version: Version::V1,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: self.cert_id_for(serial, CertIdHash::Sha1)?,
                    single_request_extensions: None,
                }],
                request_extensions: None,
            },
            optional_signature: None,
        };
        let der = req.to_der().map_err(Error::encoding)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        Ok(b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"))
    }

    /// Writes `<dir>/<SERIAL>.der` for each of `serials` that needs it at `now` (see the module
    /// documentation for the layout and the refresh rule), then rewrites the index.
    ///
    /// 1. create `dir` if needed;
    /// 2. per serial: read its status from cerdb (`unknown` → no file, listed as not issued);
    ///    keep an existing file that still holds (same status, same signer, not near
    ///    nextUpdate); otherwise sign a new response and replace the file;
    /// 3. rewrite [`PRESIGN_INDEX_FILE`] from the `.der` files now in `dir`.
    pub fn presign(
        &self,
        serials: &[Serial],
        dir: &Path,
        now: DateTime<Utc>,
    ) -> Result<PresignReport, Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut report = PresignReport::default();
        for serial in serials {
            let status = self.status_of(serial)?;
            if status == SingleStatus::Unknown {
                report.not_issued.push(serial.clone());
                continue;
            }
            let path = dir.join(Self::presign_file_name(serial));
            let current = match fs::read(&path) {
                Ok(bytes) => self.still_holds(&bytes, serial, &status, now),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(Error::io(&path, e)),
            };
            if current {
                report.unchanged.push(serial.clone());
                continue;
            }
            let (der, _) = self.sign_for_serial(serial, CertIdHash::Sha1, status, now)?;
            write_atomically(dir, &Self::presign_file_name(serial), &der)?;
            report.written.push(serial.clone());
        }
        self.write_index(dir)?;
        tracing::info!(
            written = report.written.len(),
            unchanged = report.unchanged.len(),
            not_issued = report.not_issued.len(),
            dir = %dir.display(),
            "pre-signed OCSP responses"
        );
        Ok(report)
    }

    /// Whether a pre-signed file may stay: it decodes, answers the SHA-1 CertID of `serial`
    /// with `status`, carries this responder's signer certificate, and is fresh at `now`.
    fn still_holds(&self, bytes: &[u8], serial: &Serial, status: &SingleStatus, now: DateTime<Utc>) -> bool {
        let check = || -> Option<bool> {
            let resp = OcspResponse::from_der(bytes).ok()?;
            if resp.response_status != OcspResponseStatus::Successful {
                return Some(false);
            }
            let basic = BasicOcspResponse::from_der(resp.response_bytes?.response.as_bytes()).ok()?;
            let certs = basic.certs.as_deref().unwrap_or_default();
            let same_signer = certs.len() == 1 && certs[0].to_der().ok()? == self.signer_certificate_der();
            let data = basic.tbs_response_data;
            let [single] = data.responses.as_slice() else {
                return Some(false);
            };
            let want_id = self.cert_id_for(serial, CertIdHash::Sha1).ok()?;
            let same_status = single.cert_status == status.to_asn1().ok()?;
            let this_update =
                DateTime::from_timestamp(single.this_update.0.to_unix_duration().as_secs() as i64, 0)?;
            let next_update =
                DateTime::from_timestamp(single.next_update?.0.to_unix_duration().as_secs() as i64, 0)?;
            let fresh = this_update <= now && now < next_update - self.config().refresh_margin;
            Some(same_signer && single.cert_id == want_id && same_status && fresh)
        };
        check().unwrap_or(false)
    }

    fn write_index(&self, dir: &Path) -> Result<(), Error> {
        let mut lines = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(".der") else { continue };
            let Ok(serial) = stem.parse::<Serial>() else { continue };
            if Self::presign_file_name(&serial) != name {
                continue;
            }
            lines.push(format!("{}\t{name}\n", self.rfc5019_get_path(&serial)?));
        }
        lines.sort();
        write_atomically(dir, PRESIGN_INDEX_FILE, lines.concat().as_bytes())
    }
}

/// Writes `dir/name` through a temporary file in `dir` and a rename, so a web server never
/// serves half a file.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))
}
