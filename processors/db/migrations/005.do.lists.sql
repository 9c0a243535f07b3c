-- Indexes of the HTTP lists (processors/lists.ts). Reservations and transfers are kept for good, so a page of
-- GET /v1/reservations or /v1/transfers must read along an index in its order (created_at, id), not sort the table.
-- A state filter on the open ones (the few a panel shows) has its own partial index, so it skips the ended many.
CREATE INDEX IF NOT EXISTS reservations_created ON reservations (created_at, id);
CREATE INDEX IF NOT EXISTS reservations_sku_created ON reservations (sku, created_at, id);
CREATE INDEX IF NOT EXISTS reservations_active_created ON reservations (created_at, id) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS transfers_created ON transfers (created_at, id);
CREATE INDEX IF NOT EXISTS transfers_sku_created ON transfers (sku, created_at, id);
CREATE INDEX IF NOT EXISTS transfers_open_created ON transfers (created_at, id) WHERE state IN ('reserved', 'in_transit');
