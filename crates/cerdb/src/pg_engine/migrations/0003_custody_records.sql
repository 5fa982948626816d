-- Key custody's sealed records (cerdb::custody_store): every key sealed under the master key,
-- and the master key's derivation parameters, by name. A name is written once.
CREATE TABLE custody_records (
    name       text PRIMARY KEY,
    record     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
