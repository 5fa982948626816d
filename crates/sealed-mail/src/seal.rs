//! Sealing one message: the recipient's certificate from CerDB, the sender's key from custody,
//! then sign → timestamp → encrypt → frame; or the signed invitation when the recipient has no
//! valid encryption certificate and the caller asked for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cerdb::directory::ApiKeyName;
use cerdb::mail_senders::{MailSender, MailSenders, SenderName};
use cerdb::{CertKind, CertReader, Clock, EmailAddress, Serial, Usage};
use chrono::{DateTime, Utc};
use der::{Decode, Encode};
use ring::rand::SecureRandom as _;

use crate::envelope::{envelop, Recipient};
use crate::mime::{self, Content, HeaderText};
use crate::signed::{sign, Encapsulation, SenderKey, SignatureTimestamp, Timestamper};
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

/// Where each sealed message is recorded; it must be recorded before the message is handed out.
pub trait MailAudit: Send + Sync {
    /// Records one message.
    fn record(&self, rec: &SealRecord) -> Result<(), Error>;

    /// Records several messages; an implementation may write them at once.
    fn record_all(&self, recs: &[SealRecord]) -> Result<(), Error> {
        recs.iter().try_for_each(|r| self.record(r))
    }
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
    cache: Mutex<HashMap<(SenderName, Serial), SenderKey>>,
    rng: ring::rand::SystemRandom,
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
}

impl Sealer {
    /// A sealer; refused when the archive certificate holds no key this crate encrypts to.
    pub fn new(p: SealerParts) -> Result<Self, Error> {
        let archive = p.archive.as_deref().map(Recipient::from_der).transpose()?;
        Ok(Sealer {
            reader: p.reader,
            senders: p.senders,
            keys: p.keys,
            tsa: p.tsa,
            archive,
            invitation: p.invitation,
            clock: p.clock,
            audit: p.audit,
            cache: Mutex::new(HashMap::new()),
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

    fn sender_key(&self, sender: &MailSender) -> Result<SenderKey, Error> {
        let id = (sender.name.clone(), sender.serial.clone());
        if let Some(k) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(k.clone());
        }
        let k = self.keys.sender_key(sender)?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(id, k.clone());
        Ok(k)
    }

    /// Seals `req` for the API key `key`.
    ///
    /// 1. the sender, if `key` may send as it (else [`Error::SenderNotAllowed`]);
    /// 2. the recipient's newest encryption certificate valid now — revoked, expired and
    ///    not-yet-valid ones are never used; none: the invitation if asked for, else
    ///    [`Error::NoCertificate`];
    /// 3. the entity signed (opaque), its signature timestamped when asked;
    /// 4. encrypted to the recipient (and the archive certificate) and framed;
    /// 5. recorded in the audit log before it is returned.
    pub fn seal(&self, key: &ApiKeyName, req: &SealRequest) -> Result<Sealed, Error> {
        let (sealed, record) = self.make(key, req)?;
        self.audit.record(&record)?;
        Ok(sealed)
    }

    /// Seals every request of a bulk run (on every core), then records all that were made in the
    /// audit log at once before any is returned; the answers in order.
    pub fn seal_many(&self, key: &ApiKeyName, reqs: &[SealRequest]) -> Vec<Result<Sealed, Error>> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
        let chunk = reqs.len().div_ceil(threads).max(1);
        let made: Vec<Result<(Sealed, SealRecord), Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = reqs
                .chunks(chunk)
                .map(|c| scope.spawn(move || c.iter().map(|r| self.make(key, r)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
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

    /// Makes the message of `req` and its audit record (steps 1 to 4 of [`Sealer::seal`]).
    fn make(&self, key: &ApiKeyName, req: &SealRequest) -> Result<(Sealed, SealRecord), Error> {
        let sender = self.sender_for(key, &req.sender)?;
        let now = self.clock.now();
        let cert = self.reader.newest_valid(&req.to, CertKind::from(Usage::Encryption), now)?;
        let sender_key = self.sender_key(&sender)?;
        let random = self.random16()?;
        let message_id = format!("{}@{}", hex::encode(random), domain_of(&sender.email));
        let (message, kind, serial, stamp) = match cert {
            Some(rec) => {
                let recipient = Recipient::from_der(&rec.der)?;
                let entity = mime::content_entity(&req.content, &random);
                let tsa = if req.timestamp { Some(self.tsa()?) } else { None };
                let signed = sign(&entity, &sender_key, now, Encapsulation::Opaque, tsa)?;
                let inner = mime::pkcs7_mime("signed-data", &signed.der);
                let mut recipients = vec![recipient];
                recipients.extend(self.archive.iter().cloned());
                let enveloped = envelop(&inner, &recipients)?;
                let outer = mime::pkcs7_mime("enveloped-data", &enveloped);
                let msg = self.frame(&sender, &req.to, &req.subject, now, &message_id, &outer);
                (msg, MessageKind::Sealed, Some(rec.serial), signed.timestamp)
            }
            None if req.fallback_invitation => {
                let content = Content { text: self.invitation.text.clone(), html: None, attachments: vec![] };
                let entity = mime::content_entity(&content, &random);
                let tsa = if req.timestamp { Some(self.tsa()?) } else { None };
                let signed = sign(&entity, &sender_key, now, Encapsulation::Detached, tsa)?;
                let body = mime::multipart_signed(&entity, &signed.der, &random);
                let msg = self.frame(&sender, &req.to, &self.invitation.subject, now, &message_id, &body);
                (msg, MessageKind::Invitation, None, signed.timestamp)
            }
            None => return Err(Error::NoCertificate),
        };
        let timestamp_serial = stamp.map(|s: SignatureTimestamp| s.serial);
        let record = SealRecord {
            api_key: key.to_string(),
            sender: sender.name.to_string(),
            recipient_hash: req.to.lookup_hash(),
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

    fn frame(
        &self,
        sender: &MailSender,
        to: &EmailAddress,
        subject: &HeaderText,
        now: DateTime<Utc>,
        message_id: &str,
        entity: &[u8],
    ) -> Vec<u8> {
        mime::message(
            &mime::Envelope {
                from_name: sender.name.as_str(),
                from: sender.email.as_str(),
                to: to.as_str(),
                subject,
                date: now,
                message_id,
            },
            entity,
        )
    }
}

fn domain_of(e: &EmailAddress) -> &str {
    e.as_str().rsplit_once('@').map(|(_, d)| d).unwrap_or("localhost")
}

/// The TSA of this installation, in process: a token over the SHA-256 of the signature value.
pub struct InProcessTsa(pub Arc<tsa::TimestampAuthority>);

impl Timestamper for InProcessTsa {
    fn stamp(&self, signature_value: &[u8]) -> Result<SignatureTimestamp, Error> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, signature_value)
            .as_ref()
            .try_into()
            .map_err(|_| Error::Internal("SHA-256 of 32 bytes".into()))?;
        let mut nonce = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Internal("no randomness".into()))?;
        let query = tsa::sha256_query(&digest, &nonce).map_err(|e| Error::Timestamp(e.to_string()))?;
        let reply = self.0.respond(&query);
        let resp = tsa::asn1::TimeStampResp::from_der(&reply).map_err(|e| Error::Timestamp(e.to_string()))?;
        let token = resp
            .time_stamp_token
            .ok_or_else(|| Error::Timestamp(format!("the TSA refused: {:?}", resp.status.status)))?;
        let sd: cms::signed_data::SignedData =
            token.content.decode_as().map_err(|e| Error::Timestamp(e.to_string()))?;
        let tst = sd
            .encap_content_info
            .econtent
            .as_ref()
            .ok_or_else(|| Error::Timestamp("a token without TSTInfo".into()))?
            .decode_as::<der::asn1::OctetString>()
            .map_err(|e| Error::Timestamp(e.to_string()))?;
        let info =
            tsa::asn1::TstInfo::from_der(tst.as_bytes()).map_err(|e| Error::Timestamp(e.to_string()))?;
        let serial = hex::encode_upper(info.serial_number.as_bytes());
        Ok(SignatureTimestamp { token: token.to_der().map_err(Error::encoding)?, serial })
    }
}
