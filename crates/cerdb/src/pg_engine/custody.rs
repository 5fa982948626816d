//! Key custody's sealed records in PostgreSQL.
//!
//! | table | key | what |
//! |---|---|---|
//! | `custody_records` | the record's name | the sealed record, and when it was stored |

use super::{off_runtime, PgEngine};
use crate::custody_store::CustodyRecords;
use crate::Error;

impl CustodyRecords for PgEngine {
    fn insert_custody_record(&self, name: &str, record: &[u8]) -> Result<bool, Error> {
        off_runtime(|| {
            self.fault()?;
            let n = self.conn()?.execute(
                "INSERT INTO custody_records (name, record) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &record],
            )?;
            if n == 1 {
                self.flushed()?;
            }
            Ok(n == 1)
        })
    }

    fn custody_record(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        off_runtime(|| {
            Ok(self
                .conn()?
                .query_opt("SELECT record FROM custody_records WHERE name = $1", &[&name])?
                .map(|r| r.get(0)))
        })
    }

    fn custody_record_names(&self, prefix: &str) -> Result<Vec<String>, Error> {
        off_runtime(|| {
            // starts_with, not LIKE: a prefix holding `%` or `_` means itself.
            Ok(self
                .conn()?
                .query(
                    "SELECT name FROM custody_records WHERE starts_with(name, $1) ORDER BY name",
                    &[&prefix],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn remove_custody_record(&self, name: &str) -> Result<bool, Error> {
        off_runtime(|| {
            self.fault()?;
            let n = self.conn()?.execute("DELETE FROM custody_records WHERE name = $1", &[&name])?;
            Ok(n == 1)
        })
    }
}
