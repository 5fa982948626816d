//! The TSA's token ledger: one file of fixed-size binary records, appended in serial order.
//!
//! The file is `tsa-tokens.ledger` inside the database directory. Its first `RECORD_LEN`
//! bytes are a header (magic and format version, zero-padded); record `i` (from 0) follows at
//! `(i + 1) * RECORD_LEN`:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | serial, u64 big-endian |
//! | 8..16 | genTime, whole seconds since the Unix epoch, i64 big-endian |
//! | 16..20 | genTime, nanoseconds, u32 big-endian |
//! | 20, 21..53 | hash algorithm OID as dotted text: length, then text zero-padded to 32 |
//! | 53, 54..150 | policy OID as dotted text: length, then text zero-padded to 96 |
//! | 150, 151..215 | message imprint: length, then the hash zero-padded to 64 |
//! | 215..247 | SHA-256 of the token |
//! | 247 | zero |
//! | 248..256 | the first 8 bytes of SHA-256 over bytes 0..248 (detects torn and damaged records) |
//!
//! Serials strictly increase from record to record, so a serial is found by binary search.
//!
//! **Only whole batches become durable.** The committer writes at most `MAX_BATCH` records,
//! then syncs, and writes no more before the sync returned. So after a crash only the last
//! `MAX_BATCH` records can be torn or missing; `LedgerFile::open` checks exactly those and cuts
//! the file at the first one that is not whole. Those records were never acknowledged: no token
//! of theirs was handed out.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use super::{TokenRecord, TsaSerial};
use crate::Error;

/// The file's name inside the database directory.
pub(crate) const FILE_NAME: &str = "tsa-tokens.ledger";
/// The size of the header and of every record.
pub(crate) const RECORD_LEN: usize = 256;
/// The most records one write covers before its sync.
pub(crate) const MAX_BATCH: usize = 4096;
/// The longest hash algorithm OID text a record holds.
const MAX_HASH_OID: usize = 32;
/// The longest policy OID text a record holds.
pub const MAX_POLICY_TEXT: usize = 96;
/// The longest message imprint a record holds (SHA-512).
const MAX_IMPRINT: usize = 64;

const MAGIC: &[u8] = b"pki-tsa-ledger\nversion 1\nrecord 256\n";

const HASH_AT: usize = 20;
const POLICY_AT: usize = HASH_AT + 1 + MAX_HASH_OID;
const IMPRINT_AT: usize = POLICY_AT + 1 + MAX_POLICY_TEXT;
const TOKEN_HASH_AT: usize = IMPRINT_AT + 1 + MAX_IMPRINT;
const CHECK_AT: usize = RECORD_LEN - 8;
const _: () = assert!(TOKEN_HASH_AT + 32 < CHECK_AT);

/// One encoded record.
pub(crate) type RawRecord = [u8; RECORD_LEN];

fn header() -> RawRecord {
    let mut h = [0u8; RECORD_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h
}

fn check_bytes(body: &[u8]) -> [u8; 8] {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d.as_ref()[..8]);
    out
}

/// Puts `value` as a length byte and the bytes, zero-padded to `max`, at `at`.
fn put_field(out: &mut RawRecord, at: usize, max: usize, value: &[u8], what: &str) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::Inconsistent(format!(
            "a TSA token record holds a {what} of at most {max} bytes, not {}",
            value.len()
        )));
    }
    out[at] = value.len() as u8;
    out[at + 1..at + 1 + value.len()].copy_from_slice(value);
    Ok(())
}

fn get_field<'a>(rec: &'a RawRecord, at: usize, max: usize, what: &str) -> Result<&'a [u8], Error> {
    let len = usize::from(rec[at]);
    if len > max {
        return Err(Error::Corrupt(format!("TSA ledger record: {what} length {len} over {max}")));
    }
    Ok(&rec[at + 1..at + 1 + len])
}

fn text_field(rec: &RawRecord, at: usize, max: usize, what: &str) -> Result<String, Error> {
    String::from_utf8(get_field(rec, at, max, what)?.to_vec())
        .map_err(|_| Error::Corrupt(format!("TSA ledger record: {what} is not text")))
}

/// Encodes a record; a field too long for its slot is refused.
pub(crate) fn encode(rec: &TokenRecord) -> Result<RawRecord, Error> {
    let mut out = [0u8; RECORD_LEN];
    out[0..8].copy_from_slice(&rec.serial.value().to_be_bytes());
    out[8..16].copy_from_slice(&rec.gen_time.timestamp().to_be_bytes());
    out[16..20].copy_from_slice(&rec.gen_time.timestamp_subsec_nanos().to_be_bytes());
    put_field(&mut out, HASH_AT, MAX_HASH_OID, rec.hash_algorithm.as_bytes(), "hash algorithm OID")?;
    put_field(&mut out, POLICY_AT, MAX_POLICY_TEXT, rec.policy.as_bytes(), "policy OID")?;
    put_field(&mut out, IMPRINT_AT, MAX_IMPRINT, &rec.imprint, "message imprint")?;
    out[TOKEN_HASH_AT..TOKEN_HASH_AT + 32].copy_from_slice(&rec.token_sha256);
    let check = check_bytes(&out[..CHECK_AT]);
    out[CHECK_AT..].copy_from_slice(&check);
    Ok(out)
}

/// The serial of an encoded record, unchecked.
fn serial_of(rec: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&rec[..8]);
    u64::from_be_bytes(b)
}

/// Decodes a record, checking its check bytes and every field.
pub(crate) fn decode(rec: &RawRecord) -> Result<TokenRecord, Error> {
    if rec[CHECK_AT..] != check_bytes(&rec[..CHECK_AT]) {
        return Err(Error::Corrupt("TSA ledger record: check bytes do not match (torn or damaged)".into()));
    }
    let serial = TsaSerial::new(serial_of(rec))
        .map_err(|_| Error::Corrupt("TSA ledger record: serial number zero".into()))?;
    let mut secs = [0u8; 8];
    secs.copy_from_slice(&rec[8..16]);
    let mut nanos = [0u8; 4];
    nanos.copy_from_slice(&rec[16..20]);
    let gen_time = DateTime::<Utc>::from_timestamp(i64::from_be_bytes(secs), u32::from_be_bytes(nanos))
        .ok_or_else(|| Error::Corrupt(format!("TSA ledger record {serial}: genTime out of range")))?;
    let mut token_sha256 = [0u8; 32];
    token_sha256.copy_from_slice(&rec[TOKEN_HASH_AT..TOKEN_HASH_AT + 32]);
    Ok(TokenRecord {
        serial,
        gen_time,
        hash_algorithm: text_field(rec, HASH_AT, MAX_HASH_OID, "hash algorithm")?,
        policy: text_field(rec, POLICY_AT, MAX_POLICY_TEXT, "policy")?,
        imprint: get_field(rec, IMPRINT_AT, MAX_IMPRINT, "message imprint")?.to_vec(),
        token_sha256,
    })
}

/// The ledger file, open for appending (by the committer alone) and reading (by anyone).
#[derive(Debug)]
pub(crate) struct LedgerFile {
    file: File,
    path: PathBuf,
    /// The bytes written and synced: readers never look past it, and the next batch goes here.
    len: AtomicU64,
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Db(format!("{what} {}: {e}", path.display()))
}

impl LedgerFile {
    /// Opens the ledger in `dir`, creating it (and syncing the directory) when it is missing, and
    /// cuts off a torn tail (see the module documentation).
    pub(crate) fn open(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open the TSA ledger", e))?;
        let size = file.metadata().map_err(|e| io_error(&path, "cannot read the size of", e))?.len();
        let ledger = LedgerFile { file, path, len: AtomicU64::new(0) };
        let rl = RECORD_LEN as u64;
        if size < rl {
            // New, or a crash while the header was written (nothing else was ever written then).
            let mut start = vec![0u8; size as usize];
            ledger.read_exact_at(&mut start, 0)?;
            if start.iter().zip(header().iter()).any(|(a, b)| a != b) && start.iter().any(|b| *b != 0) {
                return Err(Error::Corrupt(format!("{} is not a TSA ledger", ledger.path.display())));
            }
            ledger.file.set_len(0).map_err(|e| io_error(&ledger.path, "cannot reset", e))?;
            ledger.write_synced(&header(), 0)?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(dir, "cannot sync the directory", e))?;
            ledger.len.store(rl, Ordering::Release);
            return Ok(ledger);
        }
        let mut head = [0u8; RECORD_LEN];
        ledger.read_exact_at(&mut head, 0)?;
        if head != header() {
            return Err(Error::Corrupt(format!(
                "{} is not a TSA ledger of this version (its header differs)",
                ledger.path.display()
            )));
        }
        let whole = size / rl - 1; // records, not counting a partial one at the end
        let from = whole.saturating_sub(MAX_BATCH as u64);
        let mut tail = vec![0u8; ((whole - from) * rl) as usize];
        ledger.read_exact_at(&mut tail, (from + 1) * rl)?;
        let mut prev = if from == 0 { 0 } else { ledger.serial_at(from - 1)? };
        let mut keep = from;
        for chunk in tail.chunks_exact(RECORD_LEN) {
            let raw: &RawRecord = chunk.try_into().map_err(|_| Error::Corrupt("TSA ledger chunk".into()))?;
            match decode(raw) {
                Ok(rec) if rec.serial.value() > prev => {
                    prev = rec.serial.value();
                    keep += 1;
                }
                _ => break,
            }
        }
        let keep_len = (keep + 1) * rl;
        if keep_len != size {
            tracing::warn!(
                ledger = %ledger.path.display(),
                bytes = size - keep_len,
                "cutting the unacknowledged, torn end of the TSA ledger left by a crash"
            );
            ledger.file.set_len(keep_len).map_err(|e| io_error(&ledger.path, "cannot truncate", e))?;
            ledger.file.sync_data().map_err(|e| io_error(&ledger.path, "cannot sync", e))?;
        }
        ledger.len.store(keep_len, Ordering::Release);
        Ok(ledger)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        self.file.read_exact_at(buf, offset).map_err(|e| io_error(&self.path, "cannot read", e))
    }

    fn write_synced(&self, buf: &[u8], offset: u64) -> Result<(), Error> {
        self.file.write_all_at(buf, offset).map_err(|e| io_error(&self.path, "cannot write", e))?;
        self.file.sync_data().map_err(|e| io_error(&self.path, "cannot sync", e))
    }

    /// Appends encoded records and syncs them. On failure the file is cut back to where it was
    /// (best effort) and the error returned; the records are not in the ledger.
    pub(crate) fn append(&self, records: &[u8]) -> Result<(), Error> {
        let at = self.len.load(Ordering::Acquire);
        match self.write_synced(records, at) {
            Ok(()) => {
                self.len.store(at + records.len() as u64, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(at) {
                    tracing::error!(error = %cut, "cannot cut back the TSA ledger after a failed write");
                }
                Err(e)
            }
        }
    }

    /// Records in the ledger.
    pub(crate) fn count(&self) -> u64 {
        self.len.load(Ordering::Acquire) / RECORD_LEN as u64 - 1
    }

    fn serial_at(&self, index: u64) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        self.read_exact_at(&mut b, (index + 1) * RECORD_LEN as u64)?;
        Ok(u64::from_be_bytes(b))
    }

    /// Record `index` (from 0), checked.
    pub(crate) fn read(&self, index: u64) -> Result<TokenRecord, Error> {
        let mut raw = [0u8; RECORD_LEN];
        self.read_exact_at(&mut raw, (index + 1) * RECORD_LEN as u64)?;
        decode(&raw)
    }

    /// The serial of the last record, if any.
    pub(crate) fn last_serial(&self) -> Result<Option<u64>, Error> {
        match self.count() {
            0 => Ok(None),
            n => self.serial_at(n - 1).map(Some),
        }
    }

    /// The record of `serial`: binary search over the serials, then the found record is checked.
    pub(crate) fn find(&self, serial: TsaSerial) -> Result<Option<TokenRecord>, Error> {
        let want = serial.value();
        let (mut lo, mut hi) = (0u64, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let s = self.serial_at(mid)?;
            if s == want {
                let rec = self.read(mid)?;
                if rec.serial != serial {
                    return Err(Error::Corrupt(format!("TSA ledger record {mid} changed while read")));
                }
                return Ok(Some(rec));
            }
            if s < want {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(serial: u64) -> TokenRecord {
        TokenRecord {
            serial: TsaSerial::new(serial).expect("serial"),
            gen_time: DateTime::parse_from_rfc3339("2026-11-22T18:40:01.123456Z").expect("time").to_utc(),
            hash_algorithm: "2.16.840.1.101.3.4.2.3".into(),
            imprint: vec![0xab; 64],
            policy: "1.3.6.1.4.1.32473.1".into(),
            token_sha256: [serial as u8; 32],
        }
    }

    fn append(ledger: &LedgerFile, serials: impl IntoIterator<Item = u64>) {
        let mut buf = Vec::new();
        for s in serials {
            buf.extend_from_slice(&encode(&record(s)).expect("encode"));
        }
        ledger.append(&buf).expect("append");
    }

    #[test]
    fn records_round_trip_and_bad_fields_are_refused() {
        let rec = record(u64::MAX);
        assert_eq!(decode(&encode(&rec).expect("encode")).expect("decode"), rec);
        let long = TokenRecord { policy: "1.2".repeat(40), ..record(1) };
        assert!(encode(&long).expect_err("long policy").to_string().contains("policy OID of at most 96"));
        let long = TokenRecord { imprint: vec![0; 65], ..record(1) };
        assert!(encode(&long).is_err());
        let mut raw = encode(&rec).expect("encode");
        raw[30] ^= 1;
        assert!(decode(&raw).expect_err("damaged").to_string().contains("check bytes"));
        let mut raw = encode(&record(1)).expect("encode");
        raw[POLICY_AT] = 200; // a length over its slot, with check bytes that match
        let check = check_bytes(&raw[..CHECK_AT]);
        raw[CHECK_AT..].copy_from_slice(&check);
        assert!(decode(&raw).expect_err("bad length").to_string().contains("policy length 200"));
        assert!(decode(&[0u8; RECORD_LEN]).is_err(), "all zero");
    }

    #[test]
    fn binary_search_finds_every_serial_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = LedgerFile::open(dir.path()).expect("open");
        assert_eq!(ledger.count(), 0);
        assert_eq!(ledger.last_serial().expect("last"), None);
        assert_eq!(ledger.find(TsaSerial::new(1).expect("s")).expect("find"), None);
        let serials: Vec<u64> = (1..=300).map(|i| i * 3).collect();
        append(&ledger, serials.iter().copied());
        for s in &serials {
            let found = ledger.find(TsaSerial::new(*s).expect("s")).expect("find").expect("present");
            assert_eq!(found, record(*s));
            for absent in [s - 1, s + 1] {
                if absent > 0 {
                    assert_eq!(ledger.find(TsaSerial::new(absent).expect("s")).expect("find"), None);
                }
            }
        }
        assert_eq!(ledger.last_serial().expect("last"), Some(900));
        drop(ledger);
        let again = LedgerFile::open(dir.path()).expect("reopen");
        assert_eq!(again.count(), 300);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_first_record_that_is_not_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let ledger = LedgerFile::open(dir.path()).expect("open");
        append(&ledger, 1..=10);
        drop(ledger);
        // A crash mid-batch: records 11 and 12 whole, 13 zeroed (a hole), 14 whole, then half a record.
        let mut bytes = std::fs::read(&path).expect("read");
        for s in [11u64, 12] {
            bytes.extend_from_slice(&encode(&record(s)).expect("encode"));
        }
        bytes.extend_from_slice(&[0u8; RECORD_LEN]);
        bytes.extend_from_slice(&encode(&record(14)).expect("encode"));
        bytes.extend_from_slice(&encode(&record(15)).expect("encode")[..100]);
        std::fs::write(&path, &bytes).expect("write");
        let ledger = LedgerFile::open(dir.path()).expect("reopen");
        assert_eq!(ledger.count(), 12);
        assert_eq!(ledger.last_serial().expect("last"), Some(12));
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 13 * RECORD_LEN as u64);
        // A record out of serial order ends the tail too.
        append(&ledger, [13]);
        drop(ledger);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&encode(&record(5)).expect("encode"));
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(LedgerFile::open(dir.path()).expect("reopen").count(), 13);
    }

    #[test]
    fn a_file_that_is_not_a_ledger_is_refused_and_a_torn_header_is_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"something else entirely").expect("write");
        let e = LedgerFile::open(dir.path()).expect_err("foreign file");
        assert!(e.to_string().contains("is not a TSA ledger"), "{e}");
        std::fs::write(&path, vec![b'x'; 1000]).expect("write");
        let e = LedgerFile::open(dir.path()).expect_err("foreign file");
        assert!(e.to_string().contains("header differs"), "{e}");
        std::fs::write(&path, &header()[..40]).expect("write");
        assert_eq!(LedgerFile::open(dir.path()).expect("torn header").count(), 0);
        std::fs::write(&path, [0u8; 17]).expect("write");
        assert_eq!(LedgerFile::open(dir.path()).expect("zeroed header").count(), 0);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), RECORD_LEN as u64);
    }
}
