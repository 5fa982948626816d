//! Sealing one message: the recipient's certificate from CerDB, the sender's key from custody,
//! then sign → timestamp → encrypt → frame; or the signed invitation when the recipient has no
//! valid encryption certificate and the caller asked for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cerdb::directory::ApiKeyName;
use cerdb::mail_senders::{MailSender, MailSenders, SenderName};
use cerdb::{CaId, CertKind, CertReader, CertStatus, Clock, EmailAddress, Serial, Usage, WithdrawnIssuers};
use chrono::{DateTime, Utc};
use ring::rand::SecureRandom as _;

use crate::commit::Committer;
use crate::envelope::{envelop, CbcSealing, ContentCipher, Recipient};
use crate::mime::{self, Content, HeaderText};
use crate::signed::{
    sign_detached_digest, sign_unstamped, Encapsulation, EntityDigest, IssuedTimestamp, OnDisk, SenderKey,
    SignatureTimestamp, Timestamper, Unstamped,
};
use crate::Error;

/// Where the keys of senders come from: the CA holds them in custody and knows their chains.
pub trait SenderKeys: Send + Sync {
    /// The key and chain (leaf first) of `sender`.
    fn sender_key(&self, sender: &MailSender) -> Result<SenderKey, Error>;
}

/// What the audit log records of one sealed message (never its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRecord {
    /// The API key that asked.
    pub api_key: String,
    /// The sender identity.
    pub sender: String,
    /// Hex SHA-256 of the recipient's normalised address.
    pub recipient_hash: String,
    /// The serial of the encryption certificate used; `None` for an invitation.
    pub certificate_serial: Option<Serial>,
    /// The Message-ID.
    pub message_id: String,
    /// The timestamp's serial, if one was asked for.
    pub timestamp_serial: Option<String>,
    /// Sealed, or a signed invitation.
    pub kind: MessageKind,
}

/// What the audit log records of a sealed message whose request asked for delivery, once the
/// relay has answered (never its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The API key that asked.
    pub api_key: String,
    /// The Message-ID, as in the message's [`SealRecord`].
    pub message_id: String,
    /// Hex SHA-256 of the recipient's normalised address.
    pub recipient_hash: String,
    /// The relay's queue id; or why the message was not delivered ([`DeliveryRecord::why`]).
    pub outcome: Result<String, String>,
}

impl DeliveryRecord {
    /// The record of the message `message_id` to `to`, asked for by `api_key`, from what
    /// delivering it gave.
    pub fn new(api_key: &str, message_id: &str, to: &EmailAddress, sent: &Result<String, Error>) -> Self {
        DeliveryRecord {
            api_key: api_key.to_string(),
            message_id: message_id.to_string(),
            recipient_hash: to.lookup_hash(),
            outcome: match sent {
                Ok(queue_id) => Ok(queue_id.clone()),
                Err(e) => Err(Self::why(e)),
            },
        }
    }

    /// Why a message was not delivered, as the audit log says it: the kind of failure and the
    /// relay's reply code, never the relay's text (a refusal often names the recipient, whom the
    /// log knows only by a hash) nor a server's own detail.
    pub fn why(e: &Error) -> String {
        let text = e.to_string();
        let code = reply_code(&text).map(|c| format!(" ({c})")).unwrap_or_default();
        let not_tried = match text.contains("not tried:") {
            true => ", not tried after an earlier message of the request",
            false => "",
        };
        match e {
            Error::NotDelivered { cause, .. } => Self::why(cause),
            Error::Delivery(_) => format!("the relay refused the message{code}"),
            Error::RelayUnreachable(_) => format!("the relay cannot be reached{not_tried}"),
            Error::RelayLogin(_) => format!("the relay refused the login{code}{not_tried}"),
            Error::DeliveryUnavailable => "delivery is not configured ([mail.relay])".into(),
            _ => "internal error".into(),
        }
    }
}

/// The SMTP reply code of a relay's error text, written by the relay client as `(550)`.
fn reply_code(text: &str) -> Option<&str> {
    text.match_indices('(').map(|(i, _)| &text[i + 1..]).find_map(|rest| {
        let code = rest.get(..3)?;
        let digits = code.bytes().all(|b| b.is_ascii_digit()) && matches!(code.as_bytes()[0], b'2'..=b'5');
        (digits && rest.as_bytes().get(3) == Some(&b')')).then_some(code)
    })
}

/// Where each sealed message is recorded; it must be recorded before the message is handed out.
/// What became of the messages asked to be delivered is recorded once the relay has answered.
pub trait MailAudit: Send + Sync {
    /// Records one message.
    fn record(&self, rec: &SealRecord) -> Result<(), Error>;

    /// Records several messages; an implementation may write them at once.
    fn record_all(&self, recs: &[SealRecord]) -> Result<(), Error> {
        recs.iter().try_for_each(|r| self.record(r))
    }

    /// Records what became of messages asked to be delivered, in one write.
    fn record_deliveries(&self, recs: &[DeliveryRecord]) -> Result<(), Error>;
}

/// What was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Signed and encrypted to the recipient.
    Sealed,
    /// The plain-text invitation, signed, not encrypted.
    Invitation,
}

impl MessageKind {
    /// `sealed` or `invitation`.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Sealed => "sealed",
            MessageKind::Invitation => "invitation",
        }
    }
}

/// One message to seal, checked.
#[derive(Debug, Clone)]
pub struct SealRequest {
    /// The recipient.
    pub to: EmailAddress,
    /// The sender identity.
    pub sender: SenderName,
    /// The subject.
    pub subject: HeaderText,
    /// What the reader sees.
    pub content: Content,
    /// Whether to timestamp the signature.
    pub timestamp: bool,
    /// Whether to answer with the invitation when the recipient has no certificate.
    pub fallback_invitation: bool,
    /// How the content is encrypted.
    pub cipher: ContentCipher,
}

/// A message made.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The complete RFC 5322 message.
    pub message: Vec<u8>,
    /// Its Message-ID (without angle brackets).
    pub message_id: String,
    /// Sealed or invitation.
    pub kind: MessageKind,
    /// The recipient certificate's serial (sealed messages).
    pub certificate_serial: Option<Serial>,
    /// The timestamp's serial.
    pub timestamp_serial: Option<String>,
    /// The sender's address.
    pub from: EmailAddress,
}

/// A message made but not yet handed out ([`Sealer::make`]): its timestamp's record may still be
/// on its way to disk, and its audit entry is not written. [`Sealer::commit`] waits for the one
/// and writes the other, and only then gives the message.
#[must_use = "a message is handed out only through Sealer::commit"]
pub struct Made {
    sealed: Sealed,
    record: SealRecord,
    on_disk: Option<OnDisk>,
}

impl Made {
    pub(crate) fn into_parts(self) -> (Sealed, SealRecord, Option<OnDisk>) {
        (self.sealed, self.record, self.on_disk)
    }

    #[cfg(test)]
    pub(crate) fn from_parts(sealed: Sealed, record: SealRecord, on_disk: Option<OnDisk>) -> Self {
        Made { sealed, record, on_disk }
    }
}

impl std::fmt::Debug for Made {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Made").field("record", &self.record).finish_non_exhaustive()
    }
}

/// The invitation sent to addresses without a certificate.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// Its subject.
    pub subject: HeaderText,
    /// Its text.
    pub text: String,
}

/// Seals messages.
pub struct Sealer {
    reader: Arc<dyn CertReader>,
    senders: MailSenders,
    keys: Arc<dyn SenderKeys>,
    tsa: Option<Arc<dyn Timestamper>>,
    archive: Option<Recipient>,
    invitation: Invitation,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn MailAudit>,
    /// Commits single messages in batches ([`Sealer::commit`]).
    committer: Committer,
    withdrawn: Arc<WithdrawnIssuers>,
    /// The senders' keys and chains, parsed once (a clone for every message would copy the
    /// parsed certificates).
    cache: Mutex<HashMap<(SenderName, Serial), Arc<SenderKey>>>,
    /// Recipients' certificates parsed, with their RSA keys ready to encrypt to (AWS-LC keeps
    /// a key's Montgomery constants with it): the certificate's status is still read from the
    /// store for every message before one is taken from here.
    recipients: Parsed<Recipient>,
    rng: ring::rand::SystemRandom,
}

/// The most recipients [`Sealer`] keeps parsed.
const RECIPIENTS_KEPT: usize = 4096;

/// Certificates parsed once, by serial, each checked against its DER when taken: a certificate
/// of another issuer with the same serial is parsed anew. When `cap` are kept it starts over (a
/// statement run to more addresses than that parses each certificate again, as without it).
struct Parsed<T> {
    kept: Mutex<HashMap<Serial, DerAndValue<T>>>,
    cap: usize,
}

/// A certificate's DER and what was parsed of it.
type DerAndValue<T> = (Vec<u8>, Arc<T>);

impl<T> Parsed<T> {
    fn new(cap: usize) -> Self {
        Parsed { kept: Mutex::new(HashMap::new()), cap }
    }

    /// The value of the certificate `der` with serial `serial`: kept, or `parse`d and kept.
    fn get_or(
        &self,
        serial: &Serial,
        der: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<T, Error>,
    ) -> Result<Arc<T>, Error> {
        let lock = || self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((kept_der, v)) = lock().get(serial) {
            if kept_der.as_slice() == der {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(parse(der)?);
        let mut kept = lock();
        if kept.len() >= self.cap {
            kept.clear();
        }
        kept.insert(serial.clone(), (der.to_vec(), v.clone()));
        Ok(v)
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

/// What a [`Sealer`] is made of.
pub struct SealerParts {
    /// Certificates and their status.
    pub reader: Arc<dyn CertReader>,
    /// The sender identities.
    pub senders: MailSenders,
    /// The senders' keys.
    pub keys: Arc<dyn SenderKeys>,
    /// The TSA, if timestamps can be asked for.
    pub tsa: Option<Arc<dyn Timestamper>>,
    /// The bank's archive certificate (DER), encrypted to as well when configured.
    pub archive: Option<Vec<u8>>,
    /// The invitation.
    pub invitation: Invitation,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The audit log.
    pub audit: Arc<dyn MailAudit>,
    /// The issuers withdrawn from use: their certificates neither sign nor are encrypted to.
    pub withdrawn: Arc<WithdrawnIssuers>,
}

impl Sealer {
    /// A sealer, with its thread `mail-commit` ([`Sealer::commit`]); refused when the
    /// archive certificate holds no key this crate encrypts to.
    pub fn new(p: SealerParts) -> Result<Self, Error> {
        let archive = p.archive.as_deref().map(Recipient::from_der).transpose()?;
        Ok(Sealer {
            committer: Committer::start(p.audit.clone())?,
            reader: p.reader,
            senders: p.senders,
            keys: p.keys,
            tsa: p.tsa,
            archive,
            invitation: p.invitation,
            clock: p.clock,
            audit: p.audit,
            withdrawn: p.withdrawn,
            cache: Mutex::new(HashMap::new()),
            recipients: Parsed::new(RECIPIENTS_KEPT),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    fn random16(&self) -> Result<[u8; 16], Error> {
        let mut r = [0u8; 16];
        self.rng.fill(&mut r).map_err(|_| Error::Internal("no randomness".into()))?;
        Ok(r)
    }

    /// The sender named in a request, if `key` may send as it; the same refusal whether it
    /// does not exist or is not allowed, so a key learns nothing of other senders.
    pub fn sender_for(&self, key: &ApiKeyName, name: &SenderName) -> Result<MailSender, Error> {
        match self.senders.get(name)? {
            Some(s) if s.allows(key) => Ok(s),
            _ => Err(Error::SenderNotAllowed(name.to_string())),
        }
    }

    /// Refuses a sender whose certificate cannot sign at `now` (revoked, expired, not yet valid
    /// or gone), naming the sender, the certificate and why; read from the store on every call,
    /// so a revocation takes effect at once even while the key is cached.
    pub fn check_sender(&self, sender: &MailSender, now: DateTime<Utc>) -> Result<(), Error> {
        let unusable = |reason: String| Error::SenderUnusable { sender: sender.name.to_string(), reason };
        let state = self
            .reader
            .state(&sender.serial)?
            .ok_or_else(|| unusable(format!("its certificate {} is not in the store", sender.serial)))?;
        if self.withdrawn.is_withdrawn(CaId::Issuing) {
            // Sender certificates are the issuing CA's.
            return Err(unusable(format!(
                "its certificate {} was issued by the issuing CA, which `pki ca compromise` revoked",
                sender.serial
            )));
        }
        match state.status_at(now) {
            CertStatus::Valid => Ok(()),
            CertStatus::Revoked => {
                let how = state
                    .revocation
                    .map(|r| format!(" at {} ({})", r.at.format("%Y-%m-%dT%H:%M:%SZ"), r.reason))
                    .unwrap_or_default();
                Err(unusable(format!("its certificate {} was revoked{how}", sender.serial)))
            }
            CertStatus::Expired => Err(unusable(format!(
                "its certificate {} expired at {}",
                sender.serial,
                state.not_after.format("%Y-%m-%dT%H:%M:%SZ")
            ))),
            CertStatus::NotYetValid => Err(unusable(format!(
                "its certificate {} is not valid before {}",
                sender.serial,
                state.not_before.format("%Y-%m-%dT%H:%M:%SZ")
            ))),
        }
    }

    fn sender_key(&self, sender: &MailSender) -> Result<Arc<SenderKey>, Error> {
        let id = (sender.name.clone(), sender.serial.clone());
        if let Some(k) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(k.clone());
        }
        let k = Arc::new(self.keys.sender_key(sender)?);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(id, k.clone());
        Ok(k)
    }

    /// Makes the message of `req` for the API key `key`, the CPU's work of a message:
    ///
    /// 1. the sender, if `key` may send as it (else [`Error::SenderNotAllowed`]);
    /// 2. the recipient's newest encryption certificate valid now — revoked, expired and
    ///    not-yet-valid ones are never used; none: the invitation if asked for, else
    ///    [`Error::NoCertificate`];
    /// 3. the entity signed (`multipart/signed`, RFC 8551 3.5.3: a detached `SignedData`, so
    ///    the entity is carried once, not again inside the signature), its signature timestamped
    ///    when asked;
    /// 4. encrypted to the recipient (and the archive certificate) and framed.
    ///
    /// Step 5, the audit entry before the message is handed out, is [`Sealer::commit`]. The
    /// timestamp's record at the TSA is written while the message is encrypted, and
    /// [`Sealer::commit`] waits for it: by then it is usually on disk.
    pub fn make(&self, key: &ApiKeyName, req: &SealRequest) -> Result<Made, Error> {
        let p = self.prepare(key, req)?;
        let (stamp, on_disk) = match p.head.timestamp {
            true => {
                let issued = self.tsa()?.issue(p.unstamped.signature_value())?;
                (Some(issued.stamp), Some(issued.on_disk))
            }
            false => (None, None),
        };
        let (sealed, record) = self.complete(key, p, stamp)?;
        Ok(Made { sealed, record, on_disk })
    }

    /// Step 5 of [`Sealer::make`]: the message once its timestamp's record is durable and its
    /// audit entry written. It joins the messages made meanwhile, whose timestamps are waited
    /// for and whose audit entries are written by one thread in one storage write
    /// (`commit.rs`), so the caller's thread never blocks.
    pub async fn commit(&self, made: Made) -> Result<Sealed, Error> {
        self.committer.commit(made).await
    }

    /// Records what became of a single message asked to be delivered, with the entries of the
    /// other messages committed meanwhile; once it is durable.
    pub async fn record_delivery(&self, record: DeliveryRecord) -> Result<(), Error> {
        self.committer.record_delivery(record).await
    }

    /// Records what became of a bulk request's messages asked to be delivered, in one write.
    pub fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<(), Error> {
        match records.is_empty() {
            true => Ok(()),
            false => self.audit.record_deliveries(records),
        }
    }

    /// Seals every request of a bulk run, on every core: each message is signed, then all
    /// signature values that want a timestamp are stamped in one batch (one wait for the TSA's
    /// durable records instead of one each), then each message is finished and encrypted; then
    /// all that were made are recorded in the audit log at once before any is returned. The
    /// answers in order.
    pub fn seal_many(&self, key: &ApiKeyName, reqs: &[&SealRequest]) -> Vec<Result<Sealed, Error>> {
        let pairs: Vec<&[&SealRequest]> = reqs.chunks(2).collect();
        let prepared: Vec<Result<Prepared, Error>> =
            on_every_core(pairs, |two| self.prepare_two(key, two)).into_iter().flatten().collect();
        let values: Vec<&[u8]> = prepared
            .iter()
            .filter_map(|p| {
                p.as_ref().ok().filter(|p| p.head.timestamp).map(|p| p.unstamped.signature_value())
            })
            .collect();
        let mut stamps = match (values.is_empty(), self.tsa.as_deref()) {
            (false, Some(tsa)) => tsa.stamp_many(&values),
            _ => Vec::new(),
        }
        .into_iter();
        let paired: Vec<Stamped> = prepared
            .into_iter()
            .map(|p| {
                let stamp = match &p {
                    Ok(p) if p.head.timestamp => Some(stamps.next().unwrap_or_else(|| {
                        Err(Error::Internal("a timestamp of the batch is missing".into()))
                    })),
                    _ => None,
                };
                (p, stamp)
            })
            .collect();
        let made = on_every_core(paired, |(p, stamp)| self.complete(key, p?, stamp.transpose()?));
        let records: Vec<SealRecord> =
            made.iter().filter_map(|m| m.as_ref().ok().map(|(_, r)| r.clone())).collect();
        let recorded = self.audit.record_all(&records);
        made.into_iter()
            .map(|m| match (&recorded, m) {
                (Ok(()), m) => m.map(|(s, _)| s),
                (Err(_), Ok(_)) => Err(Error::Internal("the audit log refused the bulk's entries".into())),
                (Err(_), Err(e)) => Err(e),
            })
            .collect()
    }

    /// Steps 1 to 3 of [`Sealer::make`] up to the signature: the sender and its state, the
    /// recipient's certificate, the entity signed; the timestamp is left to the caller.
    fn prepare(&self, key: &ApiKeyName, req: &SealRequest) -> Result<Prepared, Error> {
        self.passed(self.written(key, req)?)
    }

    /// A written message's CBC entity encrypted while it is hashed, then signed; any other as
    /// it was signed.
    fn passed(&self, w: Written) -> Result<Prepared, Error> {
        let Written { head, digest, body } = w;
        match body {
            Body::Cbc(entity) => {
                let CbcEntity { bytes, entity_start, rest } = *entity;
                let mut hasher = digest.hasher();
                let cbc = CbcSealing::begin(bytes, entity_start, &mut hasher)?;
                self.cbc_signed(head, rest, cbc, &hasher.finish())
            }
            Body::Other(ready) => {
                let (target, unstamped) = *ready;
                Ok(Prepared { head, target, unstamped })
            }
        }
    }

    /// [`Sealer::prepare`] of one or two messages; two encrypted with AES-256-CBC in one pass,
    /// block by block in turn, so that the core runs both chains (and both digests) at once:
    /// 95 µs a statement against 116 one after the other.
    fn prepare_two(&self, key: &ApiKeyName, reqs: &[&SealRequest]) -> Vec<Result<Prepared, Error>> {
        let [a, b] = reqs else { return reqs.iter().map(|r| self.prepare(key, r)).collect() };
        let (wa, wb) = match (self.written(key, a), self.written(key, b)) {
            (Ok(wa), Ok(wb)) => (wa, wb),
            (wa, wb) => return vec![wa.and_then(|w| self.passed(w)), wb.and_then(|w| self.passed(w))],
        };
        let ((head_a, digest_a, ea), (head_b, digest_b, eb)) = match (wa, wb) {
            (
                Written { head: ha, digest: da, body: Body::Cbc(ea) },
                Written { head: hb, digest: db, body: Body::Cbc(eb) },
            ) => ((ha, da, *ea), (hb, db, *eb)),
            // Not two to encrypt: each on its own.
            (wa, wb) => return vec![self.passed(wa), self.passed(wb)],
        };
        let (mut ha, mut hb) = (digest_a.hasher(), digest_b.hasher());
        match CbcSealing::begin_two(
            (ea.bytes, ea.entity_start, &mut ha),
            (eb.bytes, eb.entity_start, &mut hb),
        ) {
            Ok((ca, cb)) => vec![
                self.cbc_signed(head_a, ea.rest, ca, &ha.finish()),
                self.cbc_signed(head_b, eb.rest, cb, &hb.finish()),
            ],
            Err(e) => vec![Err(Error::Internal(e.to_string())), Err(e)],
        }
    }

    /// Steps 1 to 3 of [`Sealer::make`] up to the entity written: the sender and its state, the
    /// recipient's certificate; an entity to encrypt with AES-256-CBC is left to the pass that
    /// hashes it ([`CbcSealing::begin`]), any other is signed here.
    fn written(&self, key: &ApiKeyName, req: &SealRequest) -> Result<Written, Error> {
        let sender = self.sender_for(key, &req.sender)?;
        let now = self.clock.now();
        self.check_sender(&sender, now)?;
        if req.timestamp {
            self.tsa()?;
        }
        let cert = self
            .reader
            .newest_valid(&req.to, CertKind::from(Usage::Encryption), now)?
            .filter(|rec| !self.withdrawn.is_withdrawn(rec.issuer));
        let sender_key = self.sender_key(&sender)?;
        let random = self.random16()?;
        let message_id = format!("{}@{}", hex::encode(random), domain_of(&sender.email));
        let digest = EntityDigest::of(&sender_key);
        let body = match cert {
            Some(rec) => {
                let recipient = self.recipients.get_or(&rec.serial, &rec.der, Recipient::from_der)?;
                let entity = mime::SignedEntity::new(&req.content, &random, digest.micalg());
                match req.cipher {
                    ContentCipher::Aes256Cbc => {
                        let (bytes, entity_start, closing) = entity.into_parts();
                        let rest = CbcRest { closing, recipient, serial: rec.serial };
                        Body::Cbc(Box::new(CbcEntity { bytes, entity_start, rest }))
                    }
                    ContentCipher::Aes256Gcm => {
                        let unstamped =
                            sign_unstamped(entity.entity(), &sender_key, now, Encapsulation::Detached)?;
                        let sealing = Sealing::Gcm { entity };
                        Body::Other(Box::new((
                            Target::Sealed { sealing, recipient, serial: rec.serial },
                            unstamped,
                        )))
                    }
                }
            }
            None if req.fallback_invitation => {
                let content = Content { text: self.invitation.text.clone(), html: None, attachments: vec![] };
                let entity = mime::SignedEntity::new(&content, &random, digest.micalg());
                let unstamped = sign_unstamped(entity.entity(), &sender_key, now, Encapsulation::Detached)?;
                Body::Other(Box::new((Target::Invitation { entity }, unstamped)))
            }
            None => return Err(Error::NoCertificate),
        };
        let head = Head {
            sender,
            sender_key,
            now,
            message_id,
            to: req.to.clone(),
            subject: req.subject.clone(),
            timestamp: req.timestamp,
        };
        Ok(Written { head, digest, body })
    }

    /// A CBC message signed over `digest`, the digest its pass took while `cbc` began.
    fn cbc_signed(
        &self,
        head: Head,
        rest: CbcRest,
        cbc: CbcSealing,
        digest: &[u8],
    ) -> Result<Prepared, Error> {
        let unstamped = sign_detached_digest(digest, &head.sender_key, head.now)?;
        let CbcRest { closing, recipient, serial } = rest;
        let sealing = Sealing::Cbc { cbc: Box::new(cbc), closing };
        Ok(Prepared { head, target: Target::Sealed { sealing, recipient, serial }, unstamped })
    }

    /// Step 4 of [`Sealer::make`]: the signature's timestamp put in, the `SignedData` finished,
    /// encrypted to the recipient (and the archive certificate) and framed; the audit record.
    fn complete(
        &self,
        key: &ApiKeyName,
        p: Prepared,
        stamp: Option<SignatureTimestamp>,
    ) -> Result<(Sealed, SealRecord), Error> {
        let Prepared {
            head: Head { sender, sender_key, now, message_id, to, subject, .. },
            target,
            unstamped,
        } = p;
        let signed = unstamped.finish(&sender_key, stamp)?;
        let (message, kind, serial) = match target {
            Target::Sealed { sealing, recipient, serial } => {
                let mut recipients = vec![&*recipient];
                recipients.extend(self.archive.as_ref());
                // Encrypted in the buffer the entity was written in.
                let (enveloped, cipher) = match sealing {
                    Sealing::Cbc { cbc, closing } => (
                        cbc.finish(|b| closing.append(&signed.der, b), &recipients)?,
                        ContentCipher::Aes256Cbc,
                    ),
                    Sealing::Gcm { entity } => (
                        envelop(entity.finish(&signed.der), &recipients, ContentCipher::Aes256Gcm)?,
                        ContentCipher::Aes256Gcm,
                    ),
                };
                // The enveloped entity's base64 goes straight after the header: no copy of it.
                let mut msg = mime::message_header(&envelope_of(&sender, &to, &subject, now, &message_id));
                mime::pkcs7_mime(cipher.smime_type(), &enveloped.parts(), &mut msg);
                (msg.into_bytes(), MessageKind::Sealed, Some(serial))
            }
            Target::Invitation { entity } => {
                let body = entity.finish(&signed.der);
                let env = envelope_of(&sender, &to, &self.invitation.subject, now, &message_id);
                let msg = mime::message(&env, &body);
                (msg, MessageKind::Invitation, None)
            }
        };
        let timestamp_serial = signed.timestamp.map(|s: SignatureTimestamp| s.serial);
        let record = SealRecord {
            api_key: key.to_string(),
            sender: sender.name.to_string(),
            recipient_hash: to.lookup_hash(),
            certificate_serial: serial.clone(),
            message_id: message_id.clone(),
            timestamp_serial: timestamp_serial.clone(),
            kind,
        };
        let sealed = Sealed {
            message,
            message_id,
            kind,
            certificate_serial: serial,
            timestamp_serial,
            from: sender.email,
        };
        Ok((sealed, record))
    }

    fn tsa(&self) -> Result<&dyn Timestamper, Error> {
        self.tsa.as_deref().ok_or(Error::TimestampUnavailable)
    }
}

/// The header fields of a message from `sender` to `to`.
fn envelope_of<'a>(
    sender: &'a MailSender,
    to: &'a EmailAddress,
    subject: &'a HeaderText,
    now: DateTime<Utc>,
    message_id: &'a str,
) -> mime::Envelope<'a> {
    mime::Envelope {
        from_name: sender.name.as_str(),
        from: sender.email.as_str(),
        to: to.as_str(),
        subject,
        date: now,
        message_id,
    }
}

/// Who sends a message to whom, when, as what, and whether it is timestamped.
struct Head {
    sender: MailSender,
    sender_key: Arc<SenderKey>,
    now: DateTime<Utc>,
    message_id: String,
    to: EmailAddress,
    subject: HeaderText,
    timestamp: bool,
}

/// A message up to its entity written ([`Sealer::written`]).
struct Written {
    head: Head,
    digest: EntityDigest,
    body: Body,
}

/// A written message's entity.
enum Body {
    /// To be encrypted with AES-256-CBC while it is hashed, then signed (boxed: the others are
    /// a pointer).
    Cbc(Box<CbcEntity>),
    /// Signed as it is (AES-256-GCM or the invitation).
    Other(Box<(Target, Unstamped)>),
}

/// A `multipart/signed` written for AES-256-CBC, its signature part still to come.
struct CbcEntity {
    /// The head and the signed entity, one buffer, encrypted in place by the pass.
    bytes: Vec<u8>,
    /// Where the signed entity starts in `bytes`.
    entity_start: usize,
    rest: CbcRest,
}

/// What a CBC message needs after its pass: the closing of its `multipart/signed` and whom it
/// is encrypted to.
struct CbcRest {
    closing: mime::Closing,
    recipient: Arc<Recipient>,
    serial: Serial,
}

/// A message signed, waiting for its timestamp.
struct Prepared {
    head: Head,
    target: Target,
    unstamped: Unstamped,
}

/// A prepared message and its timestamp, when it asked for one.
type Stamped = (Result<Prepared, Error>, Option<Result<SignatureTimestamp, Error>>);

/// What a signed entity becomes.
enum Target {
    /// `multipart/signed` around its entity, encrypted to the recipient's certificate.
    Sealed { sealing: Sealing, recipient: Arc<Recipient>, serial: Serial },
    /// The invitation, `multipart/signed` around its entity.
    Invitation { entity: mime::SignedEntity },
}

/// How a sealed message's `multipart/signed` is being encrypted.
enum Sealing {
    /// AES-256-CBC, begun while the entity was hashed: its signature part is still to come.
    /// (The cipher's key schedule is a kilobyte: boxed, so that a prepared message moves lightly.)
    Cbc { cbc: Box<CbcSealing>, closing: mime::Closing },
    /// AES-256-GCM, all at once after the signature part.
    Gcm { entity: mime::SignedEntity },
}

/// `f` over `items` on every core (scoped threads, one contiguous share each); the results in
/// order.
pub(crate) fn on_every_core<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    if threads == 1 || items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    let share = items.len().div_ceil(threads);
    let mut shares: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut rest = items.into_iter();
    loop {
        let s: Vec<T> = rest.by_ref().take(share).collect();
        if s.is_empty() {
            break;
        }
        shares.push(s);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|s| scope.spawn(move || s.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

fn domain_of(e: &EmailAddress) -> &str {
    e.as_str().rsplit_once('@').map(|(_, d)| d).unwrap_or("localhost")
}

/// The TSA of this installation, in process: a token over the SHA-256 of the signature value.
pub struct InProcessTsa(pub Arc<tsa::TimestampAuthority>);

impl InProcessTsa {
    /// The SHA-256 of a signature value: the imprint of its token.
    fn digest(signature_value: &[u8]) -> [u8; 32] {
        let mut d = [0u8; 32];
        d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, signature_value).as_ref());
        d
    }

    /// The token and its serial, in decimal as the TSA's ledger, the console and the
    /// verification API give it.
    fn stamp_of(token: Vec<u8>, serial: tsa::TsaSerial) -> SignatureTimestamp {
        SignatureTimestamp { token, serial: serial.to_string() }
    }

    /// A refusal, with the reason the TSA gives its clients, which names no internal detail.
    fn refused(e: &tsa::Error) -> Error {
        Error::TimestampRefused(tsa::TimestampAuthority::refusal_reason(e))
    }

    /// [`Timestamper::stamp_many`] on this thread: one batch of the TSA.
    fn stamp_batch(&self, signature_values: &[&[u8]]) -> Vec<Result<SignatureTimestamp, Error>> {
        let digests: Vec<[u8; 32]> = signature_values.iter().map(|v| Self::digest(v)).collect();
        let stamps = self.0.stamp_sha256_many(&digests).into_iter();
        stamps
            .map(|r| r.map(|(token, serial)| Self::stamp_of(token, serial)).map_err(|e| Self::refused(&e)))
            .collect()
    }
}

impl Timestamper for InProcessTsa {
    /// A share of the values on every core, each share one batch of the TSA (signed on its core,
    /// its records written together), the answers in the values' order.
    fn stamp_many(&self, signature_values: &[&[u8]]) -> Vec<Result<SignatureTimestamp, Error>> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let shares: Vec<&[&[u8]]> =
            signature_values.chunks(signature_values.len().div_ceil(cores).max(1)).collect();
        on_every_core(shares, |share| self.stamp_batch(share)).into_iter().flatten().collect()
    }

    fn stamp(&self, signature_value: &[u8]) -> Result<SignatureTimestamp, Error> {
        let (token, serial) =
            self.0.stamp_sha256(&Self::digest(signature_value)).map_err(|e| Self::refused(&e))?;
        Ok(Self::stamp_of(token, serial))
    }

    fn issue(&self, signature_value: &[u8]) -> Result<IssuedTimestamp, Error> {
        let issued = self.0.issue_sha256(&Self::digest(signature_value)).map_err(|e| Self::refused(&e))?;
        let on_disk = issued.on_disk;
        Ok(IssuedTimestamp {
            stamp: Self::stamp_of(issued.token, issued.serial),
            on_disk: Box::new(move || on_disk.wait().map_err(|e| Self::refused(&e))),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn serial(hex: &str) -> Serial {
        hex.parse().expect("serial")
    }

    #[test]
    fn a_certificate_is_parsed_once_and_another_with_its_serial_is_parsed_anew() {
        let kept = Parsed::new(8);
        let parses = Cell::new(0);
        let parse = |der: &[u8]| {
            parses.set(parses.get() + 1);
            Ok(der.to_vec())
        };
        let a = kept.get_or(&serial("0A"), b"first", parse).expect("parsed");
        let again = kept.get_or(&serial("0A"), b"first", parse).expect("kept");
        assert_eq!((a.as_slice(), again.as_slice(), parses.get()), (&b"first"[..], &b"first"[..], 1));
        assert!(Arc::ptr_eq(&a, &again), "the kept value itself");
        // The same serial from another issuer: never the first one's key.
        let other = kept.get_or(&serial("0A"), b"other issuer", parse).expect("parsed");
        assert_eq!((other.as_slice(), parses.get()), (&b"other issuer"[..], 2));
        let b = kept.get_or(&serial("0B"), b"second", parse).expect("parsed");
        assert_eq!((b.as_slice(), parses.get()), (&b"second"[..], 3));
    }

    #[test]
    fn a_failed_parse_is_not_kept_and_a_full_cache_starts_over() {
        let kept = Parsed::new(2);
        let refused = kept.get_or(&serial("01"), b"bad", |_| Err(Error::RecipientKey("no".into())));
        assert!(matches!(refused, Err(Error::RecipientKey(_))));
        let parses = Cell::new(0);
        let parse = |der: &[u8]| {
            parses.set(parses.get() + 1);
            Ok(der.to_vec())
        };
        assert_eq!(kept.get_or(&serial("01"), b"good", parse).expect("parsed").as_slice(), b"good");
        kept.get_or(&serial("02"), b"two", parse).expect("parsed");
        kept.get_or(&serial("03"), b"three", parse).expect("parsed");
        assert_eq!(kept.kept.lock().expect("lock").len(), 1, "started over when full");
        assert_eq!(kept.get_or(&serial("03"), b"three", parse).expect("kept").as_slice(), b"three");
        assert_eq!(kept.get_or(&serial("01"), b"good", parse).expect("parsed again").as_slice(), b"good");
        assert_eq!(parses.get(), 4);
    }

    #[test]
    fn on_every_core_keeps_the_order_and_raises_a_panic_again() {
        let items: Vec<u32> = (0..1001).collect();
        let out = on_every_core(items.clone(), |i| (i, std::thread::current().id()));
        assert_eq!(out.iter().map(|(i, _)| *i).collect::<Vec<_>>(), items, "in order");
        let threads: std::collections::HashSet<_> = out.iter().map(|(_, t)| *t).collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads.len(), cores.min(items.len()), "one share a core");
        let failed = std::panic::catch_unwind(|| {
            on_every_core(vec![1, 2, 3, 4], |i| if i == 3 { panic!("the third item") } else { i })
        });
        assert!(failed.is_err(), "a panic in one share is raised again");
        assert_eq!(on_every_core(vec![1, 2, 3], |i| i * 2), vec![2, 4, 6]);
        assert_eq!(on_every_core(Vec::<u8>::new(), |i| i), Vec::<u8>::new());
    }

    #[test]
    fn a_delivery_failure_is_recorded_by_its_kind_and_code_never_by_the_relays_text() {
        let to: EmailAddress = "alice@example.com".parse().expect("address");
        let why = |e: Error| DeliveryRecord::new("k", "m@x", &to, &Err(e)).outcome.expect_err("refused");
        let refused = "permanent error (550): 5.1.1 <alice@example.com>: Recipient address rejected";
        let cases = [
            (Error::Delivery(refused.into()), "the relay refused the message (550)"),
            (
                Error::Delivery("transient error (451): try later".into()),
                "the relay refused the message (451)",
            ),
            (Error::Delivery("no code (55) (5500) (650) (abc) (".into()), "the relay refused the message"),
            (
                Error::RelayLogin("permanent error (535): 5.7.8 bad".into()),
                "the relay refused the login (535)",
            ),
            (
                Error::RelayLogin("not tried: message 2 of this request was refused it".into()),
                "the relay refused the login, not tried after an earlier message of the request",
            ),
            (
                Error::RelayUnreachable("Connection refused (os error 111)".into()),
                "the relay cannot be reached",
            ),
            (Error::DeliveryUnavailable, "delivery is not configured ([mail.relay])"),
            (Error::Internal("the delivery worker failed at /secret".into()), "internal error"),
        ];
        for (e, expected) in cases {
            assert_eq!(why(e), expected);
        }
        let wrapped =
            Error::NotDelivered { cause: Box::new(Error::Delivery(refused.into())), sealed: Box::default() };
        assert_eq!(why(wrapped), "the relay refused the message (550)");
        for text in ["", "(", "(5", "(55", "(550", "é(550)", "((550))", "\u{0}(599)x"] {
            // Any text, however cut, gives a reason without panicking.
            assert!(
                why(Error::Delivery(text.into())).starts_with("the relay refused the message"),
                "{text:?}"
            );
        }

        let ok = DeliveryRecord::new("k", "m@x", &to, &Ok("4AB12".into()));
        assert_eq!(ok.outcome, Ok("4AB12".to_string()));
        assert_eq!(ok.recipient_hash, to.lookup_hash());
        assert!(!format!("{ok:?}").contains("alice@"), "{ok:?}");
    }
}
