-- Schema version 1 of the PostgreSQL engine: every table of the storage contract.
-- Applied by crates/cerdb/src/pg_engine/migrate.rs inside one transaction; what each table holds
-- is documented in docs/postgresql.md and in the module of its concern.

-- Certificates (certs.rs). `meta` is the CertRecord as JSON (the DER left out), as the embedded
-- engine stores it; the columns beside it are what the indexes and the queries need.
CREATE TABLE certs (
    serial      bytea PRIMARY KEY,              -- the serial's magnitude, big-endian
    fingerprint bytea NOT NULL UNIQUE,          -- SHA-256 of der
    email_key   text,                           -- the address's lookup key (lower case), if any
    kind        smallint NOT NULL,              -- CertKind::code
    not_before  timestamptz NOT NULL,
    issuer      text NOT NULL,                  -- CaId::name
    revoked     boolean NOT NULL DEFAULT false,
    meta        text NOT NULL,
    der         bytea NOT NULL
);
CREATE INDEX certs_by_email ON certs (email_key, kind, not_before DESC, serial DESC)
    WHERE email_key IS NOT NULL;
CREATE INDEX certs_revoked ON certs (issuer) WHERE revoked;

-- The SHA-256 of every address a certificate was stored for (the directory's email_sha256).
CREATE TABLE email_hashes (
    hash      bytea PRIMARY KEY,
    email_key text NOT NULL
);

-- Serials signed into certificates never stored: with certs.serial, every serial ever used.
CREATE TABLE retired_serials (
    serial bytea PRIMARY KEY
);

-- Keys reported compromised, with the certificate whose revocation reported them first.
CREATE TABLE compromised_keys (
    key_digest bytea PRIMARY KEY,
    serial     bytea NOT NULL
);

-- The current CRL of each CA, as JSON (CrlRecord).
CREATE TABLE crls (
    ca     text PRIMARY KEY,
    record text NOT NULL
);

-- The audit log: numbered from 1 without gaps; appended only under the lock of chain_head.
CREATE TABLE audit (
    seq   bigint PRIMARY KEY CHECK (seq > 0),
    entry bytea NOT NULL
);

-- The change feed: one change per revocation, numbered from 1 without gaps.
CREATE TABLE changes (
    seq    bigint PRIMARY KEY CHECK (seq > 0),
    kind   smallint NOT NULL,                   -- 1: revoked
    serial bytea NOT NULL
);

-- One row. Every write that appends to the audit log or the change feed locks it first
-- (SELECT ... FOR UPDATE), so appends are serialised across processes: one linear chain, and
-- change numbers without gaps (last_change is the feed's newest number).
CREATE TABLE chain_head (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_change bigint NOT NULL DEFAULT 0
);
INSERT INTO chain_head DEFAULT VALUES;

-- The CA's own settings (CertStore::meta_get / meta_put).
CREATE TABLE ca_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The console (console.rs): accounts and sessions as JSON, sessions under the SHA-256 of their id.
CREATE TABLE console_users (
    name   text PRIMARY KEY,
    record text NOT NULL
);
CREATE TABLE console_sessions (
    id_sha256 bytea PRIMARY KEY,
    record    text NOT NULL
);
CREATE TABLE console_meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);

-- The directory's API keys (apikeys.rs), under the SHA-256 of the key; a name is taken once,
-- ever (revoked keys stay).
CREATE TABLE api_keys (
    hash   bytea PRIMARY KEY,
    name   text NOT NULL UNIQUE,
    record text NOT NULL
);
CREATE TABLE directory_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The TSA (tsa.rs): the serial high-water mark (one row) and one row per token, holding the
-- ledger's 256-byte record (format: crates/cerdb/src/tsa_store/ledger.rs).
CREATE TABLE tsa_serials (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    high_water bigint NOT NULL DEFAULT 0
);
INSERT INTO tsa_serials DEFAULT VALUES;
CREATE TABLE tsa_tokens (
    serial bigint PRIMARY KEY CHECK (serial > 0),
    record bytea NOT NULL CHECK (length(record) = 256)
);
