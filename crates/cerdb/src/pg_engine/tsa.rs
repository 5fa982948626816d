//! The TSA's serial high-water mark and token records in PostgreSQL.
//!
//! | table | key | what |
//! |---|---|---|
//! | `tsa_serials` | (one row) | `high_water`: every serial up to it has been handed out or reserved |
//! | `tsa_tokens` | serial | the token's record in the ledger's 256-byte format ([`crate::tsa_store::ledger`]), its check bytes included |
//!
//! A block is reserved by one `UPDATE ... RETURNING`, so processes sharing the database get
//! disjoint blocks.

use postgres::error::SqlState;

use super::{off_runtime, to_i64, to_u64, PgEngine};
use crate::tsa_store::ledger::{decode, RawRecord, RECORD_LEN};
use crate::tsa_store::{SerialBlock, TokenRecord, TsaLedger, TsaSerial};
use crate::Error;

pub(super) fn record_of(bytes: &[u8]) -> Result<TokenRecord, Error> {
    let raw: &RawRecord =
        bytes.try_into().map_err(|_| Error::Corrupt(format!("TSA token record of {} bytes", bytes.len())))?;
    decode(raw)
}

impl TsaLedger for PgEngine {
    fn high_water_mark(&self) -> Result<u64, Error> {
        off_runtime(|| {
            let h: i64 = self.conn()?.query_one("SELECT high_water FROM tsa_serials", &[])?.get(0);
            to_u64(h, "TSA serial high-water mark")
        })
    }

    /// One `UPDATE ... RETURNING`: atomic across processes, durable on commit.
    fn reserve_serials(&self, count: u64) -> Result<SerialBlock, Error> {
        off_runtime(|| {
            let count = to_i64(count.max(1), "TSA serial block")?;
            self.fault()?;
            let row = self.conn()?.query_opt(
                "UPDATE tsa_serials SET high_water = high_water + $1
                 WHERE high_water <= 9223372036854775807 - $1 RETURNING high_water",
                &[&count],
            )?;
            let Some(row) = row else {
                return Err(Error::Inconsistent("the TSA serial number space is exhausted".into()));
            };
            let new = to_u64(row.get(0), "TSA serial high-water mark")?;
            self.flushed()?;
            Ok(SerialBlock { next: new - count as u64 + 1, last: new })
        })
    }

    fn append_tokens(&self, encoded: &[u8]) -> Result<(), Error> {
        off_runtime(|| {
            let mut serials = Vec::new();
            let mut records: Vec<&[u8]> = Vec::new();
            for chunk in encoded.chunks(RECORD_LEN) {
                serials.push(to_i64(record_of(chunk)?.serial.value(), "TSA serial")?);
                records.push(chunk);
            }
            self.fault()?;
            match self.conn()?.execute(
                "INSERT INTO tsa_tokens (serial, record) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                &[&serials, &records],
            ) {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(Error::Inconsistent("a TSA token serial was recorded twice".into()))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn token_count(&self) -> Result<u64, Error> {
        off_runtime(|| {
            let n: i64 = self.conn()?.query_one("SELECT count(*) FROM tsa_tokens", &[])?.get(0);
            to_u64(n, "TSA token count")
        })
    }

    fn token_at(&self, index: u64) -> Result<TokenRecord, Error> {
        off_runtime(|| {
            let offset = to_i64(index, "TSA token index")?;
            let row = self
                .conn()?
                .query_opt("SELECT record FROM tsa_tokens ORDER BY serial OFFSET $1 LIMIT 1", &[&offset])?
                .ok_or_else(|| Error::Inconsistent(format!("no TSA token record at index {index}")))?;
            record_of(row.get(0))
        })
    }

    fn token_by_serial(&self, serial: TsaSerial) -> Result<Option<TokenRecord>, Error> {
        off_runtime(|| {
            let s = to_i64(serial.value(), "TSA serial")?;
            self.conn()?
                .query_opt("SELECT record FROM tsa_tokens WHERE serial = $1", &[&s])?
                .map(|row| record_of(row.get(0)))
                .transpose()
        })
    }
}
