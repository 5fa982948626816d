//! Schema migrations: versioned SQL embedded in the binary, applied when the engine opens.
//!
//! | table | what |
//! |---|---|
//! | `schema_version` | one row per migration applied: its version, its name, when |
//!
//! 1. begin a transaction and take the advisory lock [`MIGRATION_LOCK`], so that processes
//!    opening the same database at once apply each migration once;
//! 2. create `schema_version` if missing and read the highest version applied;
//! 3. a version above [`SCHEMA_VERSION`] is refused ([`Error::SchemaTooNew`]): this program is
//!    older than the database;
//! 4. apply every migration above it in order, recording each;
//! 5. commit — all of them or none.
//!
//! A migration is never edited once released: a change of schema is a new file.

use postgres::Client;

use crate::Error;

/// The migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (2, "escrow recoveries", include_str!("migrations/0002_escrow_recoveries.sql")),
    (3, "custody records", include_str!("migrations/0003_custody_records.sql")),
    (4, "acme records", include_str!("migrations/0004_acme_records.sql")),
];

/// The schema version this engine writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The key of the transaction-scoped advisory lock held while migrating (`pki` in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6b69;

/// Steps 1–5 of the module documentation; the schema version the database has afterwards.
/// `fault` is asked once before migrations are applied (the scenario suite's fault plan).
pub(super) fn apply(client: &mut Client, fault: &dyn Fn() -> Result<(), Error>) -> Result<u32, Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let current: i32 = tx.query_one("SELECT COALESCE(max(version), 0) FROM schema_version", &[])?.get(0);
    let current = u32::try_from(current)
        .map_err(|_| Error::Corrupt(format!("schema_version holds the version {current}")))?;
    if current > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew { database: current, engine: SCHEMA_VERSION });
    }
    if current == SCHEMA_VERSION {
        return Ok(current);
    }
    fault()?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tx.batch_execute(sql)
            .map_err(|e| Error::Db(format!("schema migration {version} ({name}): {}", super::db_error(e))))?;
        tx.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
            &[&(*version as i32), name],
        )?;
        tracing::info!(version, name, "applied a schema migration of the database");
    }
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, (version, name, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1, "{name}");
            assert!(!sql.trim().is_empty(), "{name}");
        }
    }
}
