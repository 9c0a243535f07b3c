-- Reservations (holds on stock), transfers between warehouses, and idempotency keys of commands.
-- Invariant: stock.reserved = the sum of `remaining` over the row's active reservations.
-- Lock order of every transaction: stock rows by (wh, sku), then idempotency keys, then reservations by id, then transfers
-- by id, then sku_versions by sku — so commands, sweepers and event batches never deadlock.

ALTER TABLE stock ADD CONSTRAINT stock_reserved_not_negative CHECK (reserved >= 0);

CREATE TABLE reservations (
  id         text COLLATE "C" PRIMARY KEY,
  group_id   text COLLATE "C", -- the answer's id when one split request made several parts
  wh         text COLLATE "C" NOT NULL,
  sku        text COLLATE "C" NOT NULL,
  qty        bigint NOT NULL CHECK (qty > 0),
  remaining  bigint NOT NULL CHECK (remaining >= 0 AND remaining <= qty), -- still held
  consumed   bigint NOT NULL DEFAULT 0 CHECK (consumed >= 0), -- taken by shipped events naming it
  state      text NOT NULL CHECK (state IN ('active', 'consumed', 'released', 'expired')),
  channel    text,
  transfer   text COLLATE "C", -- set when the hold belongs to a transfer (its id is then the transfer's id)
  expires_at timestamptz NOT NULL, -- a transfer's hold ignores it: the transfer's deadline governs
  created_at timestamptz NOT NULL DEFAULT now(),
  ended_at   timestamptz,
  CHECK ((state = 'active') = (remaining > 0))
);
CREATE INDEX reservations_row ON reservations (wh, sku) WHERE state = 'active';
CREATE INDEX reservations_expiry ON reservations (expires_at) WHERE state = 'active' AND transfer IS NULL;
CREATE INDEX reservations_group ON reservations (group_id) WHERE group_id IS NOT NULL;

CREATE TABLE transfers (
  id         text COLLATE "C" PRIMARY KEY,
  sku        text COLLATE "C" NOT NULL,
  qty        bigint NOT NULL CHECK (qty > 0),
  from_wh    text COLLATE "C" NOT NULL,
  to_wh      text COLLATE "C" NOT NULL CHECK (to_wh <> from_wh),
  state      text NOT NULL CHECK (state IN ('reserved', 'in_transit', 'completed', 'compensated', 'cancelled')),
  shipped    bigint NOT NULL DEFAULT 0, -- qty of source `shipped` events naming it
  received   bigint NOT NULL DEFAULT 0, -- qty of destination `received` events naming it
  deadline   timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  ended_at   timestamptz
);
CREATE INDEX transfers_open ON transfers (deadline) WHERE state IN ('reserved', 'in_transit');
CREATE INDEX transfers_in_transit ON transfers (sku) WHERE state = 'in_transit';

-- The first answer to each Idempotency-Key, written in the transaction that decided it.
CREATE TABLE idempotency_keys (
  key          text PRIMARY KEY,
  action       text NOT NULL,
  request_hash text NOT NULL, -- sha256 of the canonical request: a reused key with another request is refused
  status       integer NOT NULL,
  body         json NOT NULL, -- json, not jsonb: a replay returns the first answer as it was written
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
