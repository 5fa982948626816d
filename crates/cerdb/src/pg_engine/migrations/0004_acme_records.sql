-- Enrolment records (cerdb::acme_store): ACME accounts, orders, authorizations, External Account
-- Binding keys and mailbox validations, each kind with its own ids; a record is replaced only
-- over the bytes read (compare and swap).
CREATE TABLE acme_records (
    kind       text NOT NULL,
    id         text NOT NULL,
    created_at timestamptz NOT NULL,
    record     bytea NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX acme_records_by_time ON acme_records (kind, created_at, id);
