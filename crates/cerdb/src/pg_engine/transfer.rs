//! What a copy between engines needs of the PostgreSQL engine beyond the contract
//! ([`crate::copy::Transfer`]).

use super::apikeys::decode as decode_api_key;
use super::certs::CHANGE_REVOKED;
use super::tsa::record_of;
use super::{off_runtime, to_i64, PgEngine};
use crate::acme_store::AcmeKind;
use crate::copy::{AcmeEntry, Transfer};
use crate::directory::{ApiKeyHash, ApiKeyRecord, DirectoryError};
use crate::store::{Change, ChangeKind};
use crate::tsa_store::TokenRecord;
use crate::{AuditRecord, CertRecord, CertStore, Error, Serial};

impl Transfer for PgEngine {
    fn certs_after(&self, after: Option<&Serial>, limit: usize) -> Result<Vec<CertRecord>, Error> {
        off_runtime(|| {
            let after: &[u8] = after.map(Serial::as_bytes).unwrap_or(&[]);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut out = Vec::new();
            for row in self.conn()?.query(
                "SELECT meta, der FROM certs WHERE serial > $1 ORDER BY serial LIMIT $2",
                &[&after, &limit],
            )? {
                let mut rec: CertRecord = serde_json::from_str(row.get(0))
                    .map_err(|e| Error::Corrupt(format!("certificate metadata: {e}")))?;
                rec.der = row.get(1);
                out.push(rec);
            }
            Ok(out)
        })
    }

    /// The issuance write with no audit entry: the `revoked` column follows the record.
    fn import_certs(&self, certs: &[CertRecord]) -> Result<(), Error> {
        self.store_issued(certs, &[] as &[AuditRecord; 0])
    }

    fn import_changes(&self, changes: &[Change]) -> Result<(), Error> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let last: i64 = tx.query_one("SELECT last_change FROM chain_head FOR UPDATE", &[])?.get(0);
            let mut expected = last;
            let (mut seqs, mut serials) = (Vec::new(), Vec::new());
            for c in changes {
                let seq = to_i64(c.seq, "change")?;
                if seq != expected + 1 {
                    return Err(Error::Inconsistent(format!(
                        "change {seq} does not follow change {expected}"
                    )));
                }
                let ChangeKind::Revoked(serial) = &c.kind;
                seqs.push(seq);
                serials.push(serial.as_bytes());
                expected = seq;
            }
            let kinds = vec![CHANGE_REVOKED; seqs.len()];
            tx.execute(
                "INSERT INTO changes (seq, kind, serial) SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::bytea[])",
                &[&seqs, &kinds, &serials],
            )?;
            tx.execute("UPDATE chain_head SET last_change = $1", &[&expected])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn settings(&self) -> Result<Vec<(String, String)>, Error> {
        off_runtime(|| {
            Ok(self
                .conn()?
                .query("SELECT key, value FROM ca_settings ORDER BY key", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn console_secrets(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        off_runtime(|| {
            Ok(self
                .conn()?
                .query("SELECT key, value FROM console_meta ORDER BY key", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn api_keys_with_hashes(&self) -> Result<Vec<(ApiKeyHash, ApiKeyRecord)>, DirectoryError> {
        off_runtime(|| {
            self.conn()?
                .query("SELECT hash, record FROM api_keys ORDER BY hash", &[])?
                .iter()
                .map(|r| {
                    let hash: [u8; 32] = r.get::<_, &[u8]>(0).try_into().map_err(|_| {
                        DirectoryError::Storage(Error::Corrupt("API key hash: not 32 bytes".into()))
                    })?;
                    Ok((ApiKeyHash(hash), decode_api_key(r.get(1))?))
                })
                .collect()
        })
    }

    fn acme_entries(&self, kind: AcmeKind) -> Result<Vec<AcmeEntry>, Error> {
        off_runtime(|| {
            Ok(self
                .conn()?
                .query(
                    "SELECT id, created_at, record FROM acme_records WHERE kind = $1 ORDER BY created_at, id",
                    &[&kind.name()],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    fn tokens_page(&self, _index: u64, after_serial: u64, limit: usize) -> Result<Vec<TokenRecord>, Error> {
        off_runtime(|| {
            let after = to_i64(after_serial, "TSA serial")?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            self.conn()?
                .query(
                    "SELECT record FROM tsa_tokens WHERE serial > $1 ORDER BY serial LIMIT $2",
                    &[&after, &limit],
                )?
                .iter()
                .map(|r| record_of(r.get(0)))
                .collect()
        })
    }
}
