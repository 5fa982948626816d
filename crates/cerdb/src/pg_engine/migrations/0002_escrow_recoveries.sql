-- Escrow recovery requests (cerdb::recovery_store): the request id and the JSON record, replaced
-- only over the record read (compare and swap).
CREATE TABLE escrow_recoveries (
    id         bytea PRIMARY KEY,
    created_at timestamptz NOT NULL,
    record     text NOT NULL
);
