-- What each key's event said, as a digest of its type, sku, qty, location, reservation and transfer (batch.ts,
-- contentDigest): a key sent again with other content is then told from an honest resend (which may differ only in
-- the ts the edge stamped) from the inbox alone, never from the event log, a hypertable with no index on the key
-- whose rows may be compressed or archived away. NULL for keys decided before this migration: those are not checked.
-- A nullable column without a default: no table rewrite, however large the inbox. IF NOT EXISTS: safe to run again.
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS content bytea;
