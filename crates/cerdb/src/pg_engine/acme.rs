//! Enrolment records in PostgreSQL.
//!
//! | table | key | what |
//! |---|---|---|
//! | `acme_records` | kind, id | creation time and the record (bytes) |

use chrono::{DateTime, Utc};

use super::PgEngine;
use crate::acme_store::{check_id, AcmeKind, AcmeRecords};
use crate::Error;

impl AcmeRecords for PgEngine {
    fn insert_acme(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<bool, Error> {
        check_id(id)?;
        self.fault()?;
        let n = self.conn()?.execute(
            "INSERT INTO acme_records (kind, id, created_at, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, id) DO NOTHING",
            &[&kind.name(), &id, &created_at, &record],
        )?;
        if n == 1 {
            self.flushed()?;
        }
        Ok(n == 1)
    }

    fn put_acme(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<(), Error> {
        check_id(id)?;
        self.fault()?;
        self.conn()?.execute(
            "INSERT INTO acme_records (kind, id, created_at, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, id) DO UPDATE SET record = EXCLUDED.record",
            &[&kind.name(), &id, &created_at, &record],
        )?;
        self.flushed()
    }

    fn acme(&self, kind: AcmeKind, id: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .conn()?
            .query_opt("SELECT record FROM acme_records WHERE kind = $1 AND id = $2", &[&kind.name(), &id])?
            .map(|r| r.get(0)))
    }

    fn replace_acme(&self, kind: AcmeKind, id: &str, old: &[u8], new: &[u8]) -> Result<bool, Error> {
        self.fault()?;
        let n = self.conn()?.execute(
            "UPDATE acme_records SET record = $4 WHERE kind = $1 AND id = $2 AND record = $3",
            &[&kind.name(), &id, &old, &new],
        )?;
        if n == 1 {
            self.flushed()?;
        }
        Ok(n == 1)
    }

    fn remove_acme(&self, kind: AcmeKind, id: &str) -> Result<bool, Error> {
        self.fault()?;
        let n = self
            .conn()?
            .execute("DELETE FROM acme_records WHERE kind = $1 AND id = $2", &[&kind.name(), &id])?;
        if n == 1 {
            self.flushed()?;
        }
        Ok(n == 1)
    }

    fn acme_records(&self, kind: AcmeKind) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(self
            .conn()?
            .query(
                "SELECT id, record FROM acme_records WHERE kind = $1 ORDER BY created_at, id",
                &[&kind.name()],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}
