//! The responder: status from cerdb, responses signed by the delegated OCSP key, the cache.
//!
//! Responses are built from RustCrypto's `x509_ocsp` types (CertID, CertStatus, the nonce
//! extension, times), framed by two small hand-written functions: `response_data` puts those
//! parts into the signed `ResponseData`, and `wrap_basic` wraps it into `BasicOCSPResponse` and
//! `OCSPResponse` around the signer certificate encoded once (RFC 6960 §4.2.1). Both are checked
//! octet for octet against the `x509_ocsp` encoder in the tests:
//!
//! ```text
//! OCSPResponse ::= SEQUENCE {
//!    responseStatus         OCSPResponseStatus,
//!    responseBytes          [0] EXPLICIT ResponseBytes OPTIONAL }
//!
//! BasicOCSPResponse       ::= SEQUENCE {
//!    tbsResponseData      ResponseData,
//!    signatureAlgorithm   AlgorithmIdentifier,
//!    signature            BIT STRING,
//!    certs            [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
//!
//! ResponseData ::= SEQUENCE {
//!    version              [0] EXPLICIT Version DEFAULT v1,
//!    responderID              ResponderID,
//!    producedAt               GeneralizedTime,
//!    responses                SEQUENCE OF SingleResponse,
//!    responseExtensions   [1] EXPLICIT Extensions OPTIONAL }
//!
//! SingleResponse ::= SEQUENCE {
//!    certID                       CertID,
//!    certStatus                   CertStatus,
//!    thisUpdate                   GeneralizedTime,
//!    nextUpdate         [0]       EXPLICIT GeneralizedTime OPTIONAL,
//!    singleExtensions   [1]       EXPLICIT Extensions OPTIONAL }
//! ```
//!
//! What this responder puts in them: responderID `byKey` (SHA-1 of the signer's public key bits,
//! RFC 6960 §4.2.2.3); producedAt = thisUpdate = the request's `now` truncated to the second;
//! nextUpdate = thisUpdate + [`OcspConfig::next_update`]; `certs` = the OCSP signer certificate;
//! the request's nonce echoed in responseExtensions; the CertID echoed as the client sent it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cerdb::AsyncReads;
use cerdb::{CaId, CertReader, CertState, ChangeFeed, ChangeKind, RevocationReason, Serial};
use chrono::{DateTime, Utc};
use der::asn1::{GeneralizedTime, Null, ObjectIdentifier};
use der::{Any, Decode, Encode};
use hsm_sim::{SignatureScheme, Signer};
use x509_cert::ext::pkix::{CrlReason, ExtendedKeyUsage};
use x509_cert::ext::Extension;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{CertId, CertStatus, OcspGeneralizedTime, RevokedInfo};

use crate::cache::{CachedResponse, ResponseCache};
use crate::issuer::{serial_of, CertIdHash, ServedIssuer};
use crate::{request, Clock, Error, OcspConfig, ResponseStatus};

const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
const OID_OCSP_NOCHECK: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");
const OID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// The status of one certificate as a response states it (RFC 6960 §4.2.1 `CertStatus`), taken
/// from cerdb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SingleStatus {
    /// Issued by the issuing CA and not revoked (whatever its validity period).
    Good,
    /// Revoked.
    Revoked {
        /// revocationTime.
        at: DateTime<Utc>,
        /// The reason; `unspecified` is sent as an absent revocationReason.
        reason: RevocationReason,
    },
    /// Not a certificate the issuing CA issued.
    Unknown,
}

impl SingleStatus {
    pub(crate) fn to_asn1(&self) -> Result<CertStatus, Error> {
        Ok(match self {
            SingleStatus::Good => CertStatus::good(),
            SingleStatus::Unknown => CertStatus::unknown(),
            SingleStatus::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
                revocation_time: generalized_time(*at)?,
                revocation_reason: crl_reason(*reason),
            }),
        })
    }
}

/// RFC 5280 §5.3.1 reason code; `unspecified` is left out, as the CA/Browser Forum
/// requirements ask of OCSP responses.
fn crl_reason(reason: RevocationReason) -> Option<CrlReason> {
    match reason {
        RevocationReason::Unspecified => None,
        RevocationReason::KeyCompromise => Some(CrlReason::KeyCompromise),
        RevocationReason::CaCompromise => Some(CrlReason::CaCompromise),
        RevocationReason::AffiliationChanged => Some(CrlReason::AffiliationChanged),
        RevocationReason::Superseded => Some(CrlReason::Superseded),
        RevocationReason::CessationOfOperation => Some(CrlReason::CessationOfOperation),
        RevocationReason::PrivilegeWithdrawn => Some(CrlReason::PrivilegeWithdrawn),
    }
}

/// A GeneralizedTime of whole seconds (RFC 5280 §4.1.2.5.2, which RFC 6960 follows).
pub(crate) fn generalized_time(t: DateTime<Utc>) -> Result<OcspGeneralizedTime, Error> {
    let secs =
        u64::try_from(t.timestamp()).map_err(|_| Error::Encoding(format!("time {t} is before 1970")))?;
    let gt =
        GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs)).map_err(Error::encoding)?;
    Ok(OcspGeneralizedTime(gt))
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// When a successful response without a nonce was made and until when it holds: what HTTP
/// caching headers (RFC 5019 §6.2) are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// producedAt, equal to thisUpdate.
    pub produced_at: DateTime<Utc>,
    /// thisUpdate.
    pub this_update: DateTime<Utc>,
    /// nextUpdate.
    pub next_update: DateTime<Utc>,
}

/// A response with what the HTTP layer needs to know about it.
#[derive(Debug, Clone)]
pub struct OcspReply {
    /// The `OCSPResponse` DER; always present and decodable.
    pub der: Vec<u8>,
    /// Its responseStatus.
    pub status: ResponseStatus,
    /// For a successful response without a nonce: its dates. `None` for error responses and
    /// for responses bound to a nonce, which no shared cache may keep.
    pub freshness: Option<Freshness>,
    /// Whether it was served from the cache of signed responses.
    pub from_cache: bool,
}

/// The signer the responder signs with: its certificate and key, and what every response
/// carries of them. Replaced whole by [`OcspResponder::replace_signer`].
struct SignerState {
    signer: Arc<dyn Signer>,
    cert_der: Vec<u8>,
    key_hash: Vec<u8>,
    /// DER of the signatureAlgorithm of every response.
    signature_algorithm_der: Vec<u8>,
    /// DER of `certs [0] EXPLICIT SEQUENCE OF Certificate` holding the signer certificate.
    certs_der: Vec<u8>,
    /// Its serial: once it is revoked, no response is signed ([`Error::SignerRevoked`]).
    serial: Option<Serial>,
    /// Its validity: outside it, no response is signed ([`Error::SignerNotValid`]).
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    /// Counts the signers of this responder: the first is 0.
    generation: u64,
}

/// The OCSP responder of the issuing CA.
pub struct OcspResponder {
    reader: Arc<dyn CertReader>,
    issuer: ServedIssuer,
    /// The issuing CA's subject, which every signer certificate must name as its issuer.
    issuer_name: x509_cert::name::Name,
    signer: RwLock<Arc<SignerState>>,
    config: OcspConfig,
    clock: Arc<dyn Clock>,
    cache: ResponseCache,
    /// Where revocations made by any writer are learnt of, and how far it was read.
    feed: Option<(Arc<dyn ChangeFeed>, AtomicU64)>,
    /// The serial of the issuing CA: once it is revoked, no response is signed.
    ca_serial: Option<Serial>,
    /// Set once the signer in use or the issuing CA was found revoked, with which one and the
    /// signer's serial (a new signer starts afresh; revocation of the CA is final).
    signer_revoked: Mutex<Option<(&'static str, Option<Serial>)>>,
    /// Answers since start by responseStatus code (index), and those served from the cache.
    answers: [AtomicU64; 7],
    cache_hits: AtomicU64,
    /// The store's lookups for asynchronous callers, when it has them (PostgreSQL): the HTTP
    /// workers await an answer's reads instead of blocking on them, and reads that arrive
    /// together go to the database in one statement.
    pipelined: Option<Arc<dyn AsyncReads>>,
}

/// What one answer reads from the store, read before it is made ([`OcspResponder::respond_async`]):
/// the change feed's newest entry and the states of the request's serials. Whatever is not here
/// is read from the store when needed.
#[derive(Debug)]
struct Prefetched {
    last_change: Option<u64>,
    states: Vec<(Serial, Option<CertState>)>,
}

impl Prefetched {
    fn state(&self, serial: &Serial) -> Option<&Option<CertState>> {
        self.states.iter().find(|(s, _)| s == serial).map(|(_, state)| state)
    }
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder")
            .field("signer", &self.current_signer().signer.handle())
            .field("config", &self.config)
            .field("cached_responses", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl OcspResponder {
    /// Builds the responder of the issuing CA.
    ///
    /// * `reader` — where every status comes from;
    /// * `issuing_ca_der` — the issuing CA's certificate: the issuer served, by name and key
    ///   hash under SHA-1, SHA-256, SHA-384 and SHA-512;
    /// * `signer_cert_der` — the delegated OCSP signer certificate, sent in every response;
    /// * `signer` — its key in hsm-sim;
    /// * `clock` — what the HTTP scope takes "now" from.
    ///
    /// Refused: a signer certificate that is not DER, not issued by the issuing CA, without the
    /// id-kp-OCSPSigning extended key usage (RFC 6960 §4.2.2.2), or whose key is not the
    /// signer's; a signer whose scheme is not SHA-256 based (RSA PKCS#1 v1.5 or ECDSA P-256).
    pub fn new(
        reader: Arc<dyn CertReader>,
        issuing_ca_der: &[u8],
        signer_cert_der: &[u8],
        signer: Arc<dyn Signer>,
        config: OcspConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        config.check()?;
        let ca_err = |reason: String| Error::Certificate { which: "issuing CA", reason };
        let ca = Certificate::from_der(issuing_ca_der).map_err(|e| ca_err(e.to_string()))?;
        let issuer_name = ca.tbs_certificate.subject.clone();
        let state = signer_state(&issuer_name, signer_cert_der, signer)?;
        let ca_serial = cerdb::Serial::from_bytes(ca.tbs_certificate.serial_number.as_bytes()).ok();
        Ok(OcspResponder {
            reader,
            issuer: ServedIssuer::new(&ca)?,
            issuer_name,
            signer: RwLock::new(Arc::new(state)),
            cache: ResponseCache::new(config.max_cache_entries),
            config,
            clock,
            feed: None,
            ca_serial,
            signer_revoked: Mutex::new(None),
            answers: Default::default(),
            cache_hits: AtomicU64::new(0),
            pipelined: None,
        })
    }

    /// Reads each answer's status and the change feed's end through `reads` in
    /// [`OcspResponder::respond_async`] (the store's pipelined reads, when it has them).
    pub fn with_pipelined_reads(mut self, reads: Option<Arc<dyn AsyncReads>>) -> Self {
        self.pipelined = reads;
        self
    }

    /// Signs with a new signer certificate and key from now on (the OCSP signer was re-issued):
    /// checked as [`OcspResponder::new`] checks one; the cached responses, signed by the old
    /// signer, are dropped.
    pub fn replace_signer(&self, signer_cert_der: &[u8], signer: Arc<dyn Signer>) -> Result<(), Error> {
        let mut state = signer_state(&self.issuer_name, signer_cert_der, signer)?;
        let serial = state.serial.clone();
        let mut current = self.signer.write().unwrap_or_else(|p| p.into_inner());
        state.generation = current.generation + 1;
        *current = Arc::new(state);
        drop(current);
        self.cache.clear();
        let mut revoked = self.signer_revoked.lock().unwrap_or_else(|p| p.into_inner());
        if revoked.as_ref().is_some_and(|(which, _)| *which == "OCSP signer") {
            *revoked = None;
        }
        drop(revoked);
        tracing::info!(serial = ?serial.map(|s| s.to_string()), "OCSP responses are signed by a new signer certificate");
        Ok(())
    }

    /// The serial of the signer certificate in use.
    pub fn signer_serial(&self) -> Option<Serial> {
        self.current_signer().serial.clone()
    }

    fn current_signer(&self) -> Arc<SignerState> {
        self.signer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The signer to sign with at `now`. Refuses with [`Error::SignerRevoked`] once its
    /// certificate or the issuing CA is revoked in the store (with a change feed, the store is
    /// read only when the feed reports a revocation; without one, on every call), and with
    /// [`Error::SignerNotValid`] outside its certificate's validity.
    fn check_signer(&self, now: DateTime<Utc>, pre: Option<&Prefetched>) -> Result<Arc<SignerState>, Error> {
        let state = self.current_signer();
        if let Some((which, serial)) = &*self.signer_revoked.lock().unwrap_or_else(|p| p.into_inner()) {
            if *which == "issuing CA" || *serial == state.serial {
                return Err(Error::SignerRevoked { which });
            }
        }
        let look = match &self.feed {
            Some(_) => self.follow_changes(&state, pre)?,
            None => true,
        };
        if look {
            for (which, serial) in [("OCSP signer", &state.serial), ("issuing CA", &self.ca_serial)] {
                let Some(serial) = serial else { continue };
                if self.reader.state(serial)?.is_some_and(|s| s.revocation.is_some()) {
                    *self.signer_revoked.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((which, state.serial.clone()));
                    tracing::error!(
                        "the {which} certificate {serial} is revoked: OCSP requests are answered unauthorized"
                    );
                    return Err(Error::SignerRevoked { which });
                }
            }
        }
        if now < state.not_before || now >= state.not_after {
            return Err(Error::SignerNotValid { not_before: state.not_before, not_after: state.not_after });
        }
        Ok(state)
    }

    /// Follows `feed` from its current end: before answering from the cache, the responder
    /// drops the cached responses of every certificate revoked since it last looked (by this
    /// process or any other writer of the same storage).
    pub fn with_change_feed(mut self, feed: Arc<dyn ChangeFeed>) -> Result<Self, Error> {
        let at = feed.last_change().map_err(Error::Storage)?;
        // Revocations before the feed's current end are not reported by it: look once now.
        self.feed = None;
        let state = self.current_signer();
        if let Err(e @ Error::SignerRevoked { .. }) = self.check_signer(state.not_before, None) {
            tracing::error!(error = %e, "OCSP responder started with a revoked signer");
        }
        self.feed = Some((feed, AtomicU64::new(at)));
        Ok(self)
    }

    /// Reads the change feed (when one is followed) and drops the cached responses of the
    /// certificates it reports revoked; whether the signer certificate of `state` or the
    /// issuing CA is among them.
    fn follow_changes(&self, state: &SignerState, pre: Option<&Prefetched>) -> Result<bool, Error> {
        let Some((feed, seen)) = &self.feed else { return Ok(false) };
        let last = match pre.and_then(|p| p.last_change) {
            Some(last) => last,
            None => feed.last_change().map_err(Error::Storage)?,
        };
        let from = seen.load(Ordering::Acquire);
        if last <= from {
            return Ok(false);
        }
        let mut newest = from;
        let mut signer_revoked = false;
        for change in feed.changes_since(from).map_err(Error::Storage)? {
            if let ChangeKind::Revoked(serial) = &change.kind {
                self.cache.invalidate(serial);
                signer_revoked |=
                    Some(serial) == state.serial.as_ref() || Some(serial) == self.ca_serial.as_ref();
            }
            newest = newest.max(change.seq);
        }
        seen.fetch_max(newest, Ordering::AcqRel);
        Ok(signer_revoked)
    }

    /// Answers `request_der` (a DER `OCSPRequest`) at `now`. Always a DER `OCSPResponse`:
    /// failures become its responseStatus through [`Error::response_status`].
    pub fn respond(&self, request_der: &[u8], now: DateTime<Utc>) -> Vec<u8> {
        self.respond_detailed(request_der, now).der
    }

    /// [`OcspResponder::respond`], with the status and dates the HTTP layer needs.
    pub fn respond_detailed(&self, request_der: &[u8], now: DateTime<Utc>) -> OcspReply {
        let answer = request::parse(request_der, self.config.max_request_bytes)
            .and_then(|req| self.try_respond(req, whole_seconds(now), None));
        self.counted(answer.unwrap_or_else(|e| error_reply(&e)))
    }

    /// [`OcspResponder::respond_detailed`] for the HTTP workers: with pipelined reads
    /// ([`OcspResponder::with_pipelined_reads`]), the change feed's end and the status of each
    /// serial asked for are awaited from the store, all at once, before the answer is made from
    /// them, so the worker is not blocked on the database. Every read is sent after the request
    /// arrived, so a revocation by any process is seen as by `respond_detailed`. A read that fails
    /// is answered as `respond_detailed` answers a failed read (`tryLater`). Without pipelined
    /// reads, or for a request that does not parse, it is `respond_detailed`.
    pub async fn respond_async(&self, request_der: &[u8], now: DateTime<Utc>) -> OcspReply {
        let Some(reads) = &self.pipelined else { return self.respond_detailed(request_der, now) };
        let Ok(req) = request::parse(request_der, self.config.max_request_bytes) else {
            return self.respond_detailed(request_der, now);
        };
        let serials: Vec<Serial> = req.cert_ids.iter().filter_map(serial_of).collect();
        let last_change = async {
            match self.feed {
                Some(_) => reads.last_change().await.map(Some),
                None => Ok(None),
            }
        };
        let states = futures_util::future::join_all(serials.iter().map(|s| reads.state(s)));
        let (last_change, states) = futures_util::future::join(last_change, states).await;
        let states: Result<Vec<Option<CertState>>, _> = states.into_iter().collect();
        match last_change.and_then(|last_change| Ok((last_change, states?))) {
            Ok((last_change, states)) => {
                let pre = Prefetched { last_change, states: serials.into_iter().zip(states).collect() };
                let answer = self.try_respond(req, whole_seconds(now), Some(&pre));
                self.counted(answer.unwrap_or_else(|e| error_reply(&e)))
            }
            Err(e) => self.counted(error_reply(&Error::Storage(e))),
        }
    }

    /// `reply`, counted among the answers given.
    fn counted(&self, reply: OcspReply) -> OcspReply {
        self.answers[usize::from(reply.status.code()).min(6)].fetch_add(1, Ordering::Relaxed);
        if reply.from_cache {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        reply
    }

    /// Answers given since this responder was made, by responseStatus (those never given
    /// left out), and how many of them came from the cache.
    pub fn answer_counts(&self) -> (Vec<(ResponseStatus, u64)>, u64) {
        let by_status = [
            ResponseStatus::Successful,
            ResponseStatus::MalformedRequest,
            ResponseStatus::InternalError,
            ResponseStatus::TryLater,
            ResponseStatus::SigRequired,
            ResponseStatus::Unauthorized,
        ]
        .into_iter()
        .map(|s| (s, self.answers[usize::from(s.code()).min(6)].load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
        (by_status, self.cache_hits.load(Ordering::Relaxed))
    }

    /// Forgets the cached responses of `serial` ([`OcspResponder::with_change_feed`] does it for
    /// every revocation); a hit re-checks cerdb anyway, so a revocation is never served stale.
    pub fn invalidate(&self, serial: &Serial) {
        self.cache.invalidate(serial);
    }

    /// Number of signed responses in the cache.
    pub fn cached_responses(&self) -> usize {
        self.cache.len()
    }

    /// The configuration.
    pub fn config(&self) -> &OcspConfig {
        &self.config
    }

    /// The injected clock (the HTTP scope reads it).
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The OCSP signer certificate sent in every response (DER).
    pub fn signer_certificate_der(&self) -> Vec<u8> {
        self.current_signer().cert_der.clone()
    }

    /// The answer to the parsed request `req`, with what was read from the store before.
    fn try_respond(
        &self,
        req: request::ParsedRequest,
        now: DateTime<Utc>,
        pre: Option<&Prefetched>,
    ) -> Result<OcspReply, Error> {
        let signer = self.check_signer(now, pre)?;
        // One issuer not served makes the whole request unauthorized.
        for id in &req.cert_ids {
            self.issuer.match_cert_id(id)?;
        }
        if let ([id], None) = (req.cert_ids.as_slice(), &req.nonce) {
            if let Some(serial) = serial_of(id) {
                return self.respond_cached(&signer, id, serial, now, pre);
            }
        }
        let nonce = req.nonce.is_some();
        let mut singles = Vec::with_capacity(req.cert_ids.len());
        for id in req.cert_ids {
            let status = match serial_of(&id) {
                Some(s) => self.status_from(&s, pre)?,
                None => SingleStatus::Unknown,
            };
            singles.push((id, status));
        }
        let (der, freshness) = self.sign(&signer, singles, req.nonce, now)?;
        Ok(OcspReply {
            der,
            status: ResponseStatus::Successful,
            freshness: (!nonce).then_some(freshness),
            from_cache: false,
        })
    }

    /// One CertID, no nonce: served from the cache while the status in cerdb is the one the
    /// cached response states and its nextUpdate is not near.
    ///
    /// The change feed was followed just before ([`OcspResponder::check_signer`]).
    ///
    /// 1. read the status from cerdb (metadata only);
    /// 2. a cached response for this CertID with that status, fresh at `now`, is returned;
    /// 3. otherwise a new one is signed and, unless `unknown`, cached.
    fn respond_cached(
        &self,
        signer: &SignerState,
        id: &CertId,
        serial: Serial,
        now: DateTime<Utc>,
        pre: Option<&Prefetched>,
    ) -> Result<OcspReply, Error> {
        let status = self.status_from(&serial, pre)?;
        let id_der = id.to_der().map_err(Error::encoding)?;
        if let Some(hit) = self.cache.get(&serial, &id_der) {
            let fresh = hit.fresh_at(now, self.config.refresh_margin);
            if hit.status == status && hit.signer_generation == signer.generation && fresh {
                return Ok(OcspReply {
                    der: hit.der.as_ref().clone(),
                    status: ResponseStatus::Successful,
                    freshness: Some(Freshness {
                        produced_at: hit.this_update,
                        this_update: hit.this_update,
                        next_update: hit.next_update,
                    }),
                    from_cache: true,
                });
            }
        }
        let (der, freshness) = self.sign(signer, vec![(id.clone(), status.clone())], None, now)?;
        if status != SingleStatus::Unknown {
            let entry = CachedResponse {
                cert_id_der: id_der,
                status,
                this_update: freshness.this_update,
                next_update: freshness.next_update,
                der: Arc::new(der.clone()),
                signer_generation: signer.generation,
            };
            self.cache.insert(serial, entry, now, self.config.refresh_margin);
        }
        Ok(OcspReply {
            der,
            status: ResponseStatus::Successful,
            freshness: Some(freshness),
            from_cache: false,
        })
    }

    /// The status of `serial` in cerdb: `unknown` unless the issuing CA issued it.
    pub(crate) fn status_of(&self, serial: &Serial) -> Result<SingleStatus, Error> {
        self.status_from(serial, None)
    }

    /// [`OcspResponder::status_of`], from the state in `pre` when it holds `serial`'s.
    fn status_from(&self, serial: &Serial, pre: Option<&Prefetched>) -> Result<SingleStatus, Error> {
        let state = match pre.and_then(|p| p.state(serial)) {
            Some(state) => state.clone(),
            None => self.reader.state(serial)?,
        };
        Ok(match state {
            Some(state) if state.issuer == CaId::Issuing => match state.revocation {
                Some(r) => SingleStatus::Revoked { at: r.at, reason: r.reason },
                None => SingleStatus::Good,
            },
            _ => SingleStatus::Unknown,
        })
    }

    /// The response to the RFC 5019 request for `serial`: one CertID hashed with `hash`, no
    /// nonce. Used by pre-signing.
    pub(crate) fn sign_for_serial(
        &self,
        serial: &Serial,
        hash: CertIdHash,
        status: SingleStatus,
        now: DateTime<Utc>,
    ) -> Result<(Vec<u8>, Freshness), Error> {
        let now = whole_seconds(now);
        let signer = self.check_signer(now, None)?;
        let id = self.issuer.cert_id(hash, serial)?;
        self.sign(&signer, vec![(id, status)], None, now)
    }

    /// The CertID an RFC 5019 client sends for `serial`.
    pub(crate) fn cert_id_for(&self, serial: &Serial, hash: CertIdHash) -> Result<CertId, Error> {
        self.issuer.cert_id(hash, serial)
    }

    /// Builds `ResponseData`, signs its DER with the OCSP key of `signer` and wraps it up.
    /// nextUpdate never passes the signer certificate's notAfter.
    fn sign(
        &self,
        signer: &SignerState,
        singles: Vec<(CertId, SingleStatus)>,
        nonce: Option<Extension>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<u8>, Freshness), Error> {
        let next = (now + self.config.next_update).min(signer.not_after);
        let this_update = generalized_time(now)?;
        let next_update = generalized_time(next)?;
        let mut responses = Vec::with_capacity(singles.len());
        for (cert_id, status) in &singles {
            let cert_id = cert_id.to_der().map_err(Error::encoding)?;
            let status = status.to_asn1()?.to_der().map_err(Error::encoding)?;
            responses.push((cert_id, status));
        }
        let nonce = nonce.map(|n| n.to_der()).transpose().map_err(Error::encoding)?;
        let tbs = response_data(
            &signer.key_hash,
            &this_update.to_der().map_err(Error::encoding)?,
            &responses,
            &next_update.to_der().map_err(Error::encoding)?,
            nonce.as_deref(),
        );
        let signature = signer.signer.sign(&tbs)?;
        let der = wrap_basic(&tbs, &signer.signature_algorithm_der, &signature, &signer.certs_der);
        Ok((der, Freshness { produced_at: now, this_update: now, next_update: next }))
    }
}

/// Checks a signer certificate and its key for the issuing CA named `issuer`, and encodes once
/// what every response carries of them.
///
/// Refused: a certificate that is not DER, not issued by the issuing CA, without the
/// id-kp-OCSPSigning extended key usage (RFC 6960 §4.2.2.2), or whose key is not the signer's;
/// a signer whose scheme is not SHA-256 based (RSA PKCS#1 v1.5 or ECDSA P-256).
fn signer_state(
    issuer: &x509_cert::name::Name,
    signer_cert_der: &[u8],
    signer: Arc<dyn Signer>,
) -> Result<SignerState, Error> {
    let signer_err = |reason: String| Error::Certificate { which: "OCSP signer", reason };
    let signer_cert = Certificate::from_der(signer_cert_der).map_err(|e| signer_err(e.to_string()))?;
    if signer_cert.to_der().map_err(|e| signer_err(e.to_string()))? != signer_cert_der {
        return Err(signer_err("it is not in DER (it does not re-encode to the same octets)".into()));
    }
    let tbs = &signer_cert.tbs_certificate;
    if tbs.issuer != *issuer {
        return Err(signer_err("it was not issued by the issuing CA (RFC 6960 §4.2.2.2)".into()));
    }
    let exts = tbs.extensions.as_deref().unwrap_or_default();
    let has_ocsp_eku = exts
        .iter()
        .filter(|e| e.extn_id == OID_EXT_KEY_USAGE)
        .filter_map(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .any(|eku| eku.0.contains(&OID_KP_OCSP_SIGNING));
    if !has_ocsp_eku {
        return Err(signer_err("it lacks the extended key usage id-kp-OCSPSigning".into()));
    }
    if !exts.iter().any(|e| e.extn_id == OID_OCSP_NOCHECK) {
        tracing::warn!("the OCSP signer certificate has no id-pkix-ocsp-nocheck extension");
    }
    let cert_key = tbs.subject_public_key_info.subject_public_key.raw_bytes();
    if cert_key != signer.public_key_raw() {
        return Err(Error::SignerKeyMismatch { handle: signer.handle().to_string() });
    }
    let signature_algorithm = match signer.key_type().signature_scheme() {
        SignatureScheme::RsaPkcs1Sha256 => {
            AlgorithmIdentifierOwned { oid: OID_SHA256_WITH_RSA, parameters: Some(Any::from(Null)) }
        }
        SignatureScheme::EcdsaP256Sha256 => {
            AlgorithmIdentifierOwned { oid: OID_ECDSA_WITH_SHA256, parameters: None }
        }
        other => return Err(Error::UnsupportedSignatureScheme { scheme: format!("{other:?}") }),
    };
    let time = |t: &x509_cert::time::Time| {
        DateTime::from_timestamp(t.to_unix_duration().as_secs() as i64, 0)
            .ok_or_else(|| signer_err(format!("its validity time {t} is out of range")))
    };
    let not_before = time(&tbs.validity.not_before)?;
    let not_after = time(&tbs.validity.not_after)?;
    let mut certs_der = Vec::with_capacity(signer_cert_der.len() + 8);
    push_header(&mut certs_der, 0xa0, tlv_len(signer_cert_der.len()));
    push_header(&mut certs_der, 0x30, signer_cert_der.len());
    certs_der.extend_from_slice(signer_cert_der);
    Ok(SignerState {
        key_hash: CertIdHash::Sha1.digest(cert_key),
        serial: cerdb::Serial::from_bytes(tbs.serial_number.as_bytes()).ok(),
        signer,
        cert_der: signer_cert_der.to_vec(),
        signature_algorithm_der: signature_algorithm.to_der().map_err(Error::encoding)?,
        certs_der,
        not_before,
        not_after,
        generation: 0,
    })
}

/// `id-pkix-ocsp-basic` (RFC 6960 §4.2.1), DER-encoded with its tag and length.
const ID_PKIX_OCSP_BASIC_DER: [u8; 11] = [0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// Appends a DER tag and definite length (minimal form) for `len` octets of content.
fn push_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let octets = len.to_be_bytes();
        let skip = octets.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (octets.len() - skip) as u8);
        out.extend_from_slice(&octets[skip..]);
    }
}

/// The length of a TLV with `len` octets of content.
fn tlv_len(len: usize) -> usize {
    let length_octets = if len < 0x80 { 0 } else { (usize::BITS - len.leading_zeros()).div_ceil(8) as usize };
    2 + length_octets + len
}

/// The `OCSPResponse` DER (status successful, responseBytes of type id-pkix-ocsp-basic) around an
/// encoded `ResponseData`, its signature, and the pre-encoded signatureAlgorithm and
/// `certs [0] EXPLICIT SEQUENCE OF Certificate`:
///
/// ```text
/// OCSPResponse  ::= SEQUENCE { responseStatus ENUMERATED (0), responseBytes [0] EXPLICIT
///                   SEQUENCE { responseType OID, response OCTET STRING (BasicOCSPResponse) } }
/// BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature BIT STRING,
///                   certs [0] EXPLICIT SEQUENCE OF Certificate }
/// ```
///
/// Written by hand because the typed encoder cloned and re-encoded the signer certificate for
/// every response: that took an answer with a nonce from 31 to 42 µs of CPU (the signature
/// itself is 20 µs; BENCHMARKS.md, issue 4). The test `wrapping_matches_the_typed_encoder`
/// checks it octet for octet against `x509_ocsp`.
fn wrap_basic(tbs: &[u8], signature_algorithm_der: &[u8], signature: &[u8], certs_der: &[u8]) -> Vec<u8> {
    let bits_len = 1 + signature.len();
    let basic_len = tbs.len() + signature_algorithm_der.len() + tlv_len(bits_len) + certs_der.len();
    let octets_len = tlv_len(basic_len);
    let bytes_len = ID_PKIX_OCSP_BASIC_DER.len() + tlv_len(octets_len);
    let response_len = 3 + tlv_len(tlv_len(bytes_len));
    let mut out = Vec::with_capacity(tlv_len(response_len));
    push_header(&mut out, 0x30, response_len);
    out.extend_from_slice(&[0x0a, 0x01, 0x00]); // responseStatus successful
    push_header(&mut out, 0xa0, tlv_len(bytes_len));
    push_header(&mut out, 0x30, bytes_len);
    out.extend_from_slice(&ID_PKIX_OCSP_BASIC_DER);
    push_header(&mut out, 0x04, octets_len);
    push_header(&mut out, 0x30, basic_len);
    out.extend_from_slice(tbs);
    out.extend_from_slice(signature_algorithm_der);
    push_header(&mut out, 0x03, bits_len);
    out.push(0); // no unused bits
    out.extend_from_slice(signature);
    out.extend_from_slice(certs_der);
    out
}

/// The DER of `ResponseData` from its encoded parts: responderID `byKey`, producedAt =
/// thisUpdate = `time` (an encoded GeneralizedTime), one `SingleResponse` per encoded
/// (CertID, CertStatus) pair with that thisUpdate and nextUpdate, and the encoded nonce
/// `Extension` as the only responseExtension:
///
/// ```text
/// ResponseData ::= SEQUENCE { responderID [2] EXPLICIT OCTET STRING, producedAt,
///                  responses SEQUENCE OF SingleResponse, responseExtensions [1] EXPLICIT
///                  SEQUENCE OF Extension OPTIONAL }   -- version v1 is the DEFAULT: left out
/// SingleResponse ::= SEQUENCE { certID, certStatus, thisUpdate, nextUpdate [0] EXPLICIT }
/// ```
///
/// Framed by hand for the same reason as [`wrap_basic`]: the typed encoder recomputes the
/// lengths of every nested value at each level, 2 µs of the 12 µs an answer with a nonce costs
/// besides its signature. The parts themselves are still encoded by `der`.
/// `response_data_matches_the_typed_encoder` checks it octet for octet against `x509_ocsp`.
fn response_data(
    key_hash: &[u8],
    time: &[u8],
    responses: &[(Vec<u8>, Vec<u8>)],
    next_update: &[u8],
    nonce_extension: Option<&[u8]>,
) -> Vec<u8> {
    let single_len =
        |(id, status): &(Vec<u8>, Vec<u8>)| id.len() + status.len() + time.len() + tlv_len(next_update.len());
    let responses_len: usize = responses.iter().map(|r| tlv_len(single_len(r))).sum();
    let responder_len = tlv_len(tlv_len(key_hash.len()));
    let extensions_len = nonce_extension.map_or(0, |e| tlv_len(tlv_len(e.len())));
    let data_len = responder_len + time.len() + tlv_len(responses_len) + extensions_len;
    let mut out = Vec::with_capacity(tlv_len(data_len));
    push_header(&mut out, 0x30, data_len);
    push_header(&mut out, 0xa2, tlv_len(key_hash.len()));
    push_header(&mut out, 0x04, key_hash.len());
    out.extend_from_slice(key_hash);
    out.extend_from_slice(time);
    push_header(&mut out, 0x30, responses_len);
    for r in responses {
        push_header(&mut out, 0x30, single_len(r));
        out.extend_from_slice(&r.0);
        out.extend_from_slice(&r.1);
        out.extend_from_slice(time);
        push_header(&mut out, 0xa0, next_update.len());
        out.extend_from_slice(next_update);
    }
    if let Some(e) = nonce_extension {
        push_header(&mut out, 0xa1, tlv_len(e.len()));
        push_header(&mut out, 0x30, e.len());
        out.extend_from_slice(e);
    }
    out
}

/// The reply to a request that could not be answered: its status from
/// [`Error::response_status`], the details to the log only.
pub(crate) fn error_reply(e: &Error) -> OcspReply {
    let status = e.response_status();
    match status {
        ResponseStatus::MalformedRequest | ResponseStatus::Unauthorized => {
            tracing::debug!(error = %e, %status, "OCSP request refused")
        }
        _ => tracing::warn!(error = %e, %status, "OCSP request failed"),
    }
    OcspReply { der: status_only(status), status, freshness: None, from_cache: false }
}

/// An `OCSPResponse` with only a responseStatus (RFC 6960 §4.2.1: no responseBytes unless
/// successful): `SEQUENCE { ENUMERATED status }`. Written by hand so that it cannot fail.
pub(crate) fn status_only(status: ResponseStatus) -> Vec<u8> {
    vec![0x30, 0x03, 0x0a, 0x01, status.code()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::asn1::{BitString, OctetString};
    use x509_ocsp::{BasicOcspResponse, OcspResponse, ResponderId, ResponseData, SingleResponse, Version};

    #[test]
    fn status_only_matches_the_der_encoder() {
        for s in [
            ResponseStatus::MalformedRequest,
            ResponseStatus::InternalError,
            ResponseStatus::TryLater,
            ResponseStatus::SigRequired,
            ResponseStatus::Unauthorized,
        ] {
            let want = OcspResponse { response_status: s.to_asn1(), response_bytes: None }
                .to_der()
                .expect("encodes");
            assert_eq!(status_only(s), want, "{s}");
        }
    }

    #[test]
    fn wrapping_matches_the_typed_encoder() {
        let pem = ::pem::parse(include_str!("../tests/data/issuing.pem")).expect("pem");
        let cert = Certificate::from_der(pem.contents()).expect("certificate");
        let t = generalized_time(DateTime::from_timestamp(1_700_000_000, 0).expect("time")).expect("time");
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(OctetString::new(vec![7; 20]).expect("octets")),
            produced_at: t,
            responses: Vec::new(),
            response_extensions: None,
        };
        let tbs = data.to_der().expect("tbs");
        let ecdsa = AlgorithmIdentifierOwned { oid: OID_ECDSA_WITH_SHA256, parameters: None };
        let rsa = AlgorithmIdentifierOwned { oid: OID_SHA256_WITH_RSA, parameters: Some(Any::from(Null)) };
        // Short and long signatures, so that every length form of the outer TLVs is crossed.
        for (alg, sig_len) in [(&ecdsa, 71), (&ecdsa, 72), (&rsa, 256), (&rsa, 512)] {
            let signature = vec![0xa5; sig_len];
            let typed = OcspResponse::successful(BasicOcspResponse {
                tbs_response_data: data.clone(),
                signature_algorithm: alg.clone(),
                signature: BitString::from_bytes(&signature).expect("bits"),
                certs: Some(vec![cert.clone()]),
            })
            .and_then(|r| r.to_der())
            .expect("typed");
            let mut certs_der = Vec::new();
            push_header(&mut certs_der, 0xa0, tlv_len(pem.contents().len()));
            push_header(&mut certs_der, 0x30, pem.contents().len());
            certs_der.extend_from_slice(pem.contents());
            let by_hand = wrap_basic(&tbs, &alg.to_der().expect("alg"), &signature, &certs_der);
            assert_eq!(by_hand, typed, "{} octets of signature", sig_len);
        }
        for len in [0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000] {
            let mut h = Vec::new();
            push_header(&mut h, 0x04, len);
            let want = der::Header::new(der::Tag::OctetString, len).expect("header").to_der().expect("der");
            assert_eq!(h, want, "length {len}");
            assert_eq!(tlv_len(len), want.len() + len);
        }
    }

    #[test]
    fn response_data_matches_the_typed_encoder() {
        let t = generalized_time(DateTime::from_timestamp(1_700_000_000, 0).expect("time")).expect("time");
        let next = generalized_time(DateTime::from_timestamp(1_700_086_400, 0).expect("time")).expect("time");
        let key_hash = vec![7u8; 20];
        let id = |serial: u8, name_len: usize| CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
                parameters: Some(Any::from(Null)),
            },
            issuer_name_hash: OctetString::new(vec![1; name_len]).expect("octets"),
            issuer_key_hash: OctetString::new(vec![2; name_len]).expect("octets"),
            serial_number: x509_cert::serial_number::SerialNumber::new(&[serial; 16]).expect("serial"),
        };
        let revoked = SingleStatus::Revoked {
            at: DateTime::from_timestamp(1_600_000_000, 0).expect("time"),
            reason: RevocationReason::KeyCompromise,
        };
        let unspecified = SingleStatus::Revoked {
            at: DateTime::from_timestamp(1_600_000_000, 0).expect("time"),
            reason: RevocationReason::Unspecified,
        };
        let nonce = |len: usize| Extension {
            extn_id: request::OID_NONCE,
            critical: false,
            extn_value: OctetString::new(
                OctetString::new(vec![9; len]).expect("inner").to_der().expect("der"),
            )
            .expect("octets"),
        };
        // One to many CertIDs (3 × 300 crosses the two-octet length forms), every status, with
        // and without nonces of short and long lengths.
        type Case = (Vec<(CertId, SingleStatus)>, Option<Extension>);
        let cases: Vec<Case> = vec![
            (vec![(id(1, 20), SingleStatus::Good)], None),
            (vec![(id(2, 32), revoked.clone())], Some(nonce(16))),
            (vec![(id(3, 20), unspecified)], Some(nonce(128))),
            (vec![(id(4, 20), SingleStatus::Unknown), (id(5, 32), SingleStatus::Good)], Some(nonce(1))),
            ((0..300).map(|i| (id(i as u8 | 1, 20), revoked.clone())).collect(), None),
        ];
        for (singles, n) in cases {
            let typed = ResponseData {
                version: Version::V1,
                responder_id: ResponderId::ByKey(OctetString::new(key_hash.clone()).expect("octets")),
                produced_at: t,
                responses: singles
                    .iter()
                    .map(|(cert_id, status)| SingleResponse {
                        cert_id: cert_id.clone(),
                        cert_status: status.to_asn1().expect("status"),
                        this_update: t,
                        next_update: Some(next),
                        single_extensions: None,
                    })
                    .collect(),
                response_extensions: n.clone().map(|n| vec![n]),
            }
            .to_der()
            .expect("typed");
            let parts: Vec<(Vec<u8>, Vec<u8>)> = singles
                .iter()
                .map(|(i, s)| {
                    (i.to_der().expect("id"), s.to_asn1().expect("status").to_der().expect("status"))
                })
                .collect();
            let nonce_der = n.map(|n| n.to_der().expect("nonce"));
            let by_hand = response_data(
                &key_hash,
                &t.to_der().expect("time"),
                &parts,
                &next.to_der().expect("time"),
                nonce_der.as_deref(),
            );
            assert_eq!(by_hand, typed, "{} responses", singles.len());
        }
    }

    #[test]
    fn unspecified_reason_is_left_out() {
        assert_eq!(crl_reason(RevocationReason::Unspecified), None);
        assert_eq!(crl_reason(RevocationReason::KeyCompromise), Some(CrlReason::KeyCompromise));
        assert_eq!(crl_reason(RevocationReason::PrivilegeWithdrawn), Some(CrlReason::PrivilegeWithdrawn));
    }

    #[test]
    fn times_are_whole_seconds_and_after_1970() {
        let t = DateTime::from_timestamp(1_700_000_000, 999_000_000).expect("time");
        let gt = generalized_time(whole_seconds(t)).expect("encodes");
        assert_eq!(gt.0.to_unix_duration().as_secs(), 1_700_000_000);
        let der = gt.to_der().expect("der");
        assert_eq!(&der[2..], b"20231114221320Z");
        assert!(generalized_time(DateTime::from_timestamp(-1, 0).expect("time")).is_err());
    }
}
