//! MIME framing (RFC 2045/2046/2047/2231, RFC 5322, RFC 8551 §3): the entity that is signed, the
//! S/MIME wrappers around CMS objects, and the complete message. No well-kept crate builds
//! `application/pkcs7-mime` and `multipart/signed` entities around bytes made elsewhere, so the
//! framing is written here, in this one module.
//!
//! Every line ends in CRLF (the canonical form S/MIME signs, RFC 8551 §3.1.1); every body is
//! base64 in lines of 76 characters, so the entity survives any 7-bit transport unchanged. Header
//! values from callers are checked ([`HeaderText`]): no control characters reach a header, so no
//! header can be injected.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::Error;

/// The longest subject accepted, in characters.
pub const MAX_SUBJECT_CHARS: usize = 998;
/// The longest attachment file name accepted, in characters.
pub const MAX_FILENAME_CHARS: usize = 255;

/// A header value from a caller: no control characters (CR and LF above all), at most `max`
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderText(String);

impl HeaderText {
    /// Checks `s` for the header field `field`.
    pub fn parse(field: &'static str, s: &str, max: usize) -> Result<Self, Error> {
        if s.chars().count() > max {
            return Err(Error::BadInput { field, reason: format!("longer than {max} characters") });
        }
        if s.chars().any(char::is_control) {
            return Err(Error::BadInput { field, reason: "contains control characters".into() });
        }
        Ok(HeaderText(s.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as it goes into a header: as is when printable ASCII, else RFC 2047 encoded
    /// words (UTF-8, base64), each at most 75 characters, never splitting a character.
    pub fn encoded(&self) -> String {
        if self.0.bytes().all(|b| (0x20..0x7f).contains(&b)) && !self.0.contains("=?") {
            return self.0.clone();
        }
        let mut words = Vec::new();
        let mut chunk = String::new();
        for c in self.0.chars() {
            // 45 bytes of UTF-8 make 60 characters of base64: with "=?utf-8?B?" and "?=", 72.
            if chunk.len() + c.len_utf8() > 45 {
                words.push(encoded_word(&chunk));
                chunk.clear();
            }
            chunk.push(c);
        }
        if !chunk.is_empty() || words.is_empty() {
            words.push(encoded_word(&chunk));
        }
        words.join("\r\n ")
    }
}

fn encoded_word(s: &str) -> String {
    format!("=?utf-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
}

/// A MIME media type given by a caller (`application/pdf`): `type/subtype` of RFC 2045 tokens,
/// without parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType(String);

impl MediaType {
    /// Checks `s`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let token = |t: &str| {
            !t.is_empty()
                && t.len() <= 127
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        match s.split_once('/') {
            Some((a, b)) if token(a) && token(b) => Ok(MediaType(s.to_ascii_lowercase())),
            _ => Err(Error::BadInput {
                field: "content_type",
                reason: "is not a media type such as application/pdf (type/subtype, no parameters)".into(),
            }),
        }
    }
}

/// One attachment of a message.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The file name shown to the reader.
    pub filename: HeaderText,
    /// Its media type.
    pub content_type: MediaType,
    /// Its bytes in base64 (standard alphabet, padded, canonical): the text of its MIME part,
    /// before it is cut into lines.
    base64: String,
}

impl Attachment {
    /// An attachment of `data`.
    pub fn new(filename: HeaderText, content_type: MediaType, data: &[u8]) -> Self {
        Attachment { filename, content_type, base64: base64_simd::STANDARD.encode_to_string(data) }
    }

    /// An attachment given in base64 (standard alphabet, padded), as a JSON client sends it:
    /// kept as it is when it is what encoding its bytes gives (canonical), so it is neither
    /// decoded nor encoded again; refused when it is not base64, with the `base64` crate's error,
    /// which names the offending character and its offset.
    pub fn from_base64(
        filename: HeaderText,
        content_type: MediaType,
        text: &str,
    ) -> Result<Self, base64::DecodeError> {
        // base64-simd's strict check refuses what its decoder refuses: characters outside the
        // alphabet, missing or misplaced padding, and set bits after the last byte.
        let base64 = match base64_simd::STANDARD.check(text.as_bytes()) {
            Ok(()) => text.to_owned(),
            Err(_) => {
                let data = base64::engine::general_purpose::STANDARD.decode(text.as_bytes())?;
                base64_simd::STANDARD.encode_to_string(data)
            }
        };
        Ok(Attachment { filename, content_type, base64 })
    }

    /// Its bytes in base64 (standard alphabet, padded).
    pub fn base64(&self) -> &str {
        &self.base64
    }

    /// The number of its bytes.
    pub fn len(&self) -> usize {
        let pad = self.base64.bytes().rev().take(2).filter(|&b| b == b'=').count();
        self.base64.len() / 4 * 3 - pad
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.base64.is_empty()
    }
}

/// What the reader sees: text, optionally HTML, and attachments.
#[derive(Debug, Clone)]
pub struct Content {
    /// The plain-text body.
    pub text: String,
    /// The HTML body, shown instead of the text by clients that can.
    pub html: Option<String>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
}

/// The length of [`base64_lines`] of `n` bytes.
fn base64_lines_len(n: usize) -> usize {
    n.div_ceil(57) * 2 + n.div_ceil(3) * 4
}

/// Base64 in lines of 76 characters, each ending in CRLF.
pub fn base64_lines(data: &[u8], out: &mut String) {
    // 57 bytes make one line; 64 lines are encoded at a time into a small buffer that stays in
    // the cache, then cut into lines.
    const LINE: usize = 57;
    out.reserve(base64_lines_len(data.len()));
    let mut block = String::with_capacity(64 * 76);
    for chunk in data.chunks(64 * LINE) {
        block.clear();
        base64_simd::STANDARD.encode_append(chunk, &mut block);
        lines_of(&block, out);
    }
}

/// Base64 in lines of 76 characters of the bytes of `parts` one after the other, as
/// [`base64_lines`] of them joined, without joining them: up to 56 bytes are carried from one
/// part to the next, so every line but the last is whole.
fn base64_lines_joined(parts: &[&[u8]], out: &mut String) {
    const LINE: usize = 57;
    out.reserve(base64_lines_len(parts.iter().map(|p| p.len()).sum()));
    let mut carry = Vec::with_capacity(LINE);
    for part in parts {
        let mut rest = *part;
        if !carry.is_empty() {
            let (fill, tail) = rest.split_at(rest.len().min(LINE - carry.len()));
            carry.extend_from_slice(fill);
            rest = tail;
            if carry.len() < LINE {
                continue;
            }
            base64_lines(&carry, out);
            carry.clear();
        }
        let (whole, tail) = rest.split_at(rest.len() / LINE * LINE);
        base64_lines(whole, out);
        carry.extend_from_slice(tail);
    }
    base64_lines(&carry, out);
}

/// Base64 text `b64` cut into lines of 76 characters, each ending in CRLF, appended to `out`
/// (slicing ASCII text needs no UTF-8 check).
fn lines_of(b64: &str, out: &mut String) {
    out.reserve(b64.len() + b64.len().div_ceil(76) * 2);
    let mut rest = b64;
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(76));
        out.push_str(line);
        out.push_str("\r\n");
        rest = tail;
    }
}

fn boundary(tag: &str, random: &[u8; 16]) -> String {
    // Base64 text never contains "=_", so a boundary starting with it never occurs in a body.
    format!("=_{tag}_{}", hex::encode(random))
}

fn text_part(subtype: &str, text: &str, out: &mut String) {
    let _ = write!(
        out,
        "Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    base64_lines(text.as_bytes(), out);
}

/// A `filename` parameter: quoted when it is printable ASCII without quotes or backslashes,
/// else RFC 2231 percent-encoded UTF-8.
fn filename_param(name: &HeaderText) -> String {
    let s = name.as_str();
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        return format!("filename=\"{s}\"");
    }
    let mut enc = String::from("filename*=utf-8''");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(b as char);
        } else {
            let _ = write!(enc, "%{b:02X}");
        }
    }
    enc
}

/// About the length of the content entity ([`write_content_entity`]): the bodies exactly, a
/// little more for the fields.
fn content_entity_len(content: &Content) -> usize {
    content.attachments.iter().map(|a| base64_lines_len(a.len()) + 512).sum::<usize>()
        + base64_lines_len(content.text.len())
        + content.html.as_ref().map_or(0, |h| base64_lines_len(h.len()) + 512)
        + 1024
}

/// The MIME entity that is signed, appended to `out`: text alone, text and HTML as
/// `multipart/alternative`, and with attachments inside `multipart/mixed`. `random` makes the
/// boundaries.
fn write_content_entity(content: &Content, random: &[u8; 16], out: &mut String) {
    let mixed = (!content.attachments.is_empty()).then(|| boundary("mixed", random));
    if let Some(b) = &mixed {
        let _ = write!(out, "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\n");
    }
    match &content.html {
        Some(html) => {
            let b = boundary("alt", random);
            let _ = write!(out, "Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n");
            let _ = write!(out, "--{b}\r\n");
            text_part("plain", &content.text, out);
            let _ = write!(out, "--{b}\r\n");
            text_part("html", html, out);
            let _ = write!(out, "--{b}--\r\n");
        }
        None => text_part("plain", &content.text, out),
    }
    let Some(b) = mixed else { return };
    for a in &content.attachments {
        let _ = write!(
            out,
            "--{b}\r\nContent-Type: {}\r\nContent-Disposition: attachment; {}\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            a.content_type.0,
            filename_param(&a.filename)
        );
        lines_of(&a.base64, out);
    }
    let _ = write!(out, "--{b}--\r\n");
}

/// `application/pkcs7-mime` around a CMS object of the given `smime-type` (`enveloped-data`,
/// `authEnveloped-data`; RFC 8551 §3.2), appended to `out`; its DER given in parts, in order.
pub fn pkcs7_mime(smime_type: &str, der: &[&[u8]], out: &mut String) {
    let _ = write!(
        out,
        "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    );
    base64_lines_joined(der, out);
}

/// What the signature part of a `multipart/signed` takes, at most as a rule: the base64 of a
/// `SignedData` with a chain of two certificates and a timestamp token (about 4 KB of DER).
const SIGNATURE_PART_ROOM: usize = 16 << 10;

/// A `multipart/signed` entity (RFC 8551 §3.5.3) being made: its head and the content entity
/// (the text, HTML and attachments) written into one buffer, so the entity is signed where it
/// lies and never copied into the multipart; [`SignedEntity::finish`] appends the signature.
pub struct SignedEntity {
    text: String,
    entity_start: usize,
    closing: Closing,
}

/// What closes a `multipart/signed` after its entity: the signature part and the last boundary.
pub struct Closing {
    boundary: String,
}

impl SignedEntity {
    /// The head of the `multipart/signed` whose signature's digest is `micalg`
    /// ([`crate::signed::EntityDigest::micalg`]), and the content entity of `content`.
    pub fn new(content: &Content, random: &[u8; 16], micalg: &str) -> Self {
        let boundary = boundary("signed", random);
        // Room for the signature part too, so that `finish` does not move the entity again.
        let mut text = String::with_capacity(content_entity_len(content) + SIGNATURE_PART_ROOM);
        let _ = write!(
            text,
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={micalg}; boundary=\"{boundary}\"\r\n\r\n\
             This is an S/MIME signed message.\r\n\r\n--{boundary}\r\n"
        );
        let entity_start = text.len();
        write_content_entity(content, random, &mut text);
        SignedEntity { text, entity_start, closing: Closing { boundary } }
    }

    /// The content entity: the bytes that are signed.
    pub fn entity(&self) -> &[u8] {
        &self.text.as_bytes()[self.entity_start..]
    }

    /// The whole `multipart/signed`: the entity, then its detached signature (DER).
    pub fn finish(self, signature_der: &[u8]) -> Vec<u8> {
        let (mut bytes, _, closing) = self.into_parts();
        closing.append(signature_der, &mut bytes);
        bytes
    }

    /// The bytes written so far (the head, then from the offset given the content entity), and
    /// what closes them once the signature is made: for an entity encrypted while it is hashed
    /// ([`crate::envelope::CbcSealing`]).
    pub fn into_parts(self) -> (Vec<u8>, usize, Closing) {
        (self.text.into_bytes(), self.entity_start, self.closing)
    }
}

impl Closing {
    /// Appends the signature part of `signature_der` (a `ContentInfo`, DER) and the last
    /// boundary to `out`.
    pub fn append(&self, signature_der: &[u8], out: &mut Vec<u8>) {
        let b = &self.boundary;
        let mut part = String::with_capacity(256 + base64_lines_len(signature_der.len()));
        let _ = write!(
            part,
            "\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        );
        base64_lines(signature_der, &mut part);
        let _ = write!(part, "--{b}--\r\n");
        out.extend_from_slice(part.as_bytes());
    }
}

/// The header of a message: who, to whom, what, when, which.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// The sender's display name.
    pub from_name: &'a str,
    /// The sender's address.
    pub from: &'a str,
    /// The recipient's address.
    pub to: &'a str,
    /// The subject.
    pub subject: &'a HeaderText,
    /// RFC 5322 date.
    pub date: chrono::DateTime<chrono::Utc>,
    /// The Message-ID without angle brackets.
    pub message_id: &'a str,
}

/// The header of a message (RFC 5322) up to `MIME-Version`; the entity, which starts with its
/// own `Content-*` fields, is appended to it ([`message`], or [`pkcs7_mime`] written straight
/// after it).
pub fn message_header(env: &Envelope<'_>) -> String {
    let mut s = String::new();
    let _ = write!(s, "From: {} <{}>\r\n", display_name(env.from_name), env.from);
    let _ = write!(s, "To: <{}>\r\n", env.to);
    let _ = write!(s, "Subject: {}\r\n", env.subject.encoded());
    let _ = write!(s, "Date: {}\r\n", env.date.format("%a, %d %b %Y %H:%M:%S +0000"));
    let _ = write!(s, "Message-ID: <{}>\r\n", env.message_id);
    s.push_str("MIME-Version: 1.0\r\n");
    s
}

/// The complete message (RFC 5322): the header ([`message_header`]), then `entity`.
pub fn message(env: &Envelope<'_>, entity: &[u8]) -> Vec<u8> {
    let header = message_header(env);
    let mut out = Vec::with_capacity(header.len() + entity.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(entity);
    out
}

/// A display name as a quoted string (sender names are letters, digits, `.`, `_`, `-`).
fn display_name(name: &str) -> String {
    let clean: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "._- ".contains(*c)).collect();
    format!("\"{clean}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The content entity on its own, as the tests compare it.
    fn content_entity(content: &Content, random: &[u8; 16]) -> Vec<u8> {
        let mut out = String::with_capacity(content_entity_len(content));
        write_content_entity(content, random, &mut out);
        out.into_bytes()
    }

    #[test]
    fn header_text_refuses_line_breaks_and_encodes_non_ascii() {
        assert!(HeaderText::parse("subject", "a\r\nBcc: x@y", 100).is_err());
        assert!(HeaderText::parse("subject", "a\nb", 100).is_err());
        assert!(HeaderText::parse("subject", &"x".repeat(101), 100).is_err());
        assert_eq!(HeaderText::parse("subject", "Statement", 100).expect("ok").encoded(), "Statement");
        let e = HeaderText::parse("subject", &"Kontoauszug für März ".repeat(8), 998).expect("ok").encoded();
        assert!(e.lines().all(|l| l.trim_end().len() <= 76), "{e}");
        assert!(e.starts_with("=?utf-8?B?"));
        let decoded: String = e
            .split("\r\n ")
            .map(|w| {
                let b64 = w.trim_start_matches("=?utf-8?B?").trim_end_matches("?=");
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("b64"))
                    .expect("utf8")
            })
            .collect();
        assert_eq!(decoded, "Kontoauszug für März ".repeat(8));
    }

    #[test]
    fn media_types_are_tokens() {
        assert!(MediaType::parse("application/pdf").is_ok());
        for bad in ["", "pdf", "application/", "/pdf", "text/plain; charset=x", "a/b\r\nX: y", "a/b/c"] {
            assert!(MediaType::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entities_use_crlf_and_76_character_lines() {
        let content = Content {
            text: "Hello\nworld".into(),
            html: Some("<p>Hello</p>".into()),
            attachments: vec![Attachment::new(
                HeaderText::parse("filename", "Auszug März.pdf", 255).expect("name"),
                MediaType::parse("application/pdf").expect("type"),
                &[7u8; 1000],
            )],
        };
        let e = content_entity(&content, &[1; 16]);
        let text = String::from_utf8(e).expect("ascii");
        assert!(text.is_ascii());
        assert!(!text.replace("\r\n", "").contains('\n'));
        assert!(text.split("\r\n").all(|l| l.len() <= 998));
        assert!(text.contains("filename*=utf-8''Auszug%20M%C3%A4rz.pdf"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.ends_with("--\r\n"));
    }

    /// The signed entity is the content entity, written once between the `multipart/signed` head
    /// and the signature part, with and without attachments and HTML.
    #[test]
    fn the_signed_entity_is_the_content_entity_between_head_and_signature() {
        use base64::Engine as _;
        let random = [9u8; 16];
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let attachment = Attachment::new(
            HeaderText::parse("filename", "a.pdf", 255).expect("name"),
            MediaType::parse("application/pdf").expect("type"),
            &data,
        );
        let signature: Vec<u8> = (0..700u32).map(|i| (i * 3) as u8).collect();
        let cases = [(None, vec![], "sha-256"), (Some("<p>Hi</p>".to_string()), vec![attachment], "sha-384")];
        for (html, attachments, micalg) in cases {
            let content = Content { text: "Hello".into(), html, attachments };
            let parts = SignedEntity::new(&content, &random, micalg);
            let entity = content_entity(&content, &random);
            assert_eq!(parts.entity(), entity.as_slice());
            let whole = String::from_utf8(parts.finish(&signature)).expect("ascii");
            let b = boundary("signed", &random);
            let head = format!(
                "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={micalg}; \
                 boundary=\"{b}\"\r\n\r\nThis is an S/MIME signed message.\r\n\r\n--{b}\r\n"
            );
            let rest = whole.strip_prefix(&head).expect("the head first");
            let rest =
                rest.strip_prefix(std::str::from_utf8(&entity).expect("ascii")).expect("then the entity");
            let rest = rest.strip_prefix(&format!("\r\n--{b}\r\n")).expect("then the boundary");
            let (fields, body) = rest.split_once("\r\n\r\n").expect("the signature part");
            assert!(fields.starts_with("Content-Type: application/pkcs7-signature"), "{fields}");
            let b64 = body.strip_suffix(&format!("--{b}--\r\n")).expect("the closing boundary last");
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(b64.replace("\r\n", "")).expect("b64");
            assert_eq!(decoded, signature);
        }
    }

    /// A signature part of a timestamped `SignedData`'s size (a few kilobytes) fits in the room
    /// left for it: `finish` writes it after the entity without growing (moving) the buffer.
    #[test]
    fn finishing_does_not_move_the_entity() {
        let content = Content { text: "Hello".into(), html: None, attachments: vec![] };
        let parts = SignedEntity::new(&content, &[3u8; 16], "sha-256");
        let room = parts.text.capacity();
        let whole = parts.finish(&[0x30u8; 8000]);
        assert_eq!(whole.capacity(), room, "the buffer grew");
    }

    /// An attachment given in base64 is kept as given when it is canonical, and its MIME part is
    /// the one its bytes would make; anything else is refused, naming the fault.
    #[test]
    fn attachments_given_in_base64_make_the_part_their_bytes_make() {
        let engine = base64::engine::general_purpose::STANDARD;
        let name = || HeaderText::parse("filename", "a.pdf", 255).expect("name");
        let pdf = || MediaType::parse("application/pdf").expect("type");
        for len in [0, 1, 2, 3, 56, 57, 58, 3648, 3649, 102_400] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let given = Attachment::from_base64(name(), pdf(), &engine.encode(&data)).expect("base64");
            let made = Attachment::new(name(), pdf(), &data);
            assert_eq!((given.base64(), given.len(), given.is_empty()), (made.base64(), len, len == 0));
            let entity = |a: Attachment| {
                content_entity(&Content { text: "Hi".into(), html: None, attachments: vec![a] }, &[3; 16])
            };
            assert_eq!(entity(given), entity(made), "{len}");
        }
        // Not base64, or not canonical (set bits after the last byte, padding missing or
        // misplaced, line breaks): refused, as the decoder of the `base64` crate refuses them.
        for bad in ["%%%", "QR==", "QUJ=", "QQ", "QQ=", "Q===", "QQ==QQ==", "QUJD\r\nREVG", " QUJD"] {
            let e = Attachment::from_base64(name(), pdf(), bad).expect_err(bad);
            assert!(engine.decode(bad).is_err(), "{bad:?}: the base64 crate refuses it too");
            assert!(!e.to_string().is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn base64_lines_are_76_characters_and_decode_to_the_data() {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        // Around the line (57 bytes) and the block (64 lines) and their multiples.
        for len in [0, 1, 2, 3, 56, 57, 58, 114, 3647, 3648, 3649, 7296, 10_000, 102_400] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut out = String::new();
            base64_lines(&data, &mut out);
            assert_eq!(out.len(), base64_lines_len(len), "{len}: the length reserved is the length");
            let lines: Vec<&str> = out.split_terminator("\r\n").collect();
            assert_eq!(
                out.len(),
                lines.iter().map(|l| l.len() + 2).sum::<usize>(),
                "every line ends in CRLF"
            );
            if let Some((last, full)) = lines.split_last() {
                assert!(full.iter().all(|l| l.len() == 76), "{len}: full lines of 76");
                assert!(!last.is_empty() && last.len() <= 76, "{len}");
            }
            assert_eq!(engine.decode(lines.concat()).expect("base64"), data, "{len}");
        }
    }

    #[test]
    fn base64_lines_of_parts_are_the_lines_of_the_parts_joined() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        // Splits before, inside and after a line and a block, empty parts among them.
        for cuts in [
            vec![],
            vec![0],
            vec![1],
            vec![56],
            vec![57],
            vec![58],
            vec![3647, 3648, 3648],
            vec![5, 6, 19_999],
        ] {
            let mut parts = Vec::new();
            let mut from = 0;
            for &c in &cuts {
                parts.push(&data[from..c]);
                from = c;
            }
            parts.push(&data[from..]);
            parts.push(&[]);
            for len in [0, 1, 100, data.len()] {
                let clipped: Vec<&[u8]> = parts
                    .iter()
                    .scan(0, |seen, p| {
                        let keep = p.len().min(len.saturating_sub(*seen));
                        *seen += p.len();
                        Some(&p[..keep])
                    })
                    .collect();
                let (mut joined, mut whole) = (String::new(), String::new());
                base64_lines_joined(&clipped, &mut joined);
                base64_lines(&data[..len], &mut whole);
                assert_eq!(joined, whole, "{cuts:?} {len}");
            }
        }
    }
}
