-- The ledger: inbox (dedupe), event log, book stock, shelf readings, dead letters.
-- Identifiers are ASCII; COLLATE "C" makes (ts, id, device) order bytewise, the same order the code uses.

CREATE TABLE inbox (
  wh         text COLLATE "C" NOT NULL,
  device     text COLLATE "C" NOT NULL,
  id         text COLLATE "C" NOT NULL,
  sku        text COLLATE "C" NOT NULL,
  decided_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (wh, device, id)
);

-- Book events (everything but `level`). No primary key: the inbox holds uniqueness,
-- and a TimescaleDB hypertable needs every unique index to include its time column.
CREATE TABLE events (
  ts          timestamptz NOT NULL,
  wh          text COLLATE "C" NOT NULL,
  device      text COLLATE "C" NOT NULL,
  id          text COLLATE "C" NOT NULL,
  type        text NOT NULL CHECK (type IN ('received', 'shipped', 'returned', 'adjusted', 'counted')),
  sku         text COLLATE "C" NOT NULL,
  qty         bigint NOT NULL,
  delta       bigint NOT NULL, -- signed effect on onHand; 0 for counted
  location    text,
  reservation text,
  reason      text,
  payload     jsonb NOT NULL,
  received_at timestamptz NOT NULL,
  committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_row_order ON events (wh, sku, ts); -- counts sum the deltas after them

CREATE TABLE stock (
  wh            text COLLATE "C" NOT NULL,
  sku           text COLLATE "C" NOT NULL,
  on_hand       bigint NOT NULL DEFAULT 0,
  reserved      bigint NOT NULL DEFAULT 0,
  anchor_ts     timestamptz,
  anchor_id     text COLLATE "C",
  anchor_device text COLLATE "C",
  anchor_qty    bigint,
  version       bigint NOT NULL DEFAULT 0, -- of wh/{wh}/stock/{sku}; bumped in the statement that changes the row
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (wh, sku)
);
CREATE INDEX stock_sku ON stock (sku);

-- Version of the global stock/{sku} topic: bumped whenever any warehouse's row of the sku changes.
CREATE TABLE sku_versions (
  sku        text COLLATE "C" PRIMARY KEY,
  version    bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shelf_readings (
  ts          timestamptz NOT NULL,
  wh          text COLLATE "C" NOT NULL,
  location    text COLLATE "C" NOT NULL,
  sku         text COLLATE "C" NOT NULL,
  qty         bigint NOT NULL,
  device      text COLLATE "C" NOT NULL,
  id          text COLLATE "C" NOT NULL,
  payload     jsonb NOT NULL,
  received_at timestamptz NOT NULL
);
CREATE INDEX shelf_readings_key ON shelf_readings (wh, location, sku, ts);

-- Latest reading per shelf and sku, by (ts, id, device), whatever the arrival order.
CREATE TABLE shelf_latest (
  wh       text COLLATE "C" NOT NULL,
  location text COLLATE "C" NOT NULL,
  sku      text COLLATE "C" NOT NULL,
  qty      bigint NOT NULL,
  ts       timestamptz NOT NULL,
  device   text COLLATE "C" NOT NULL,
  id       text COLLATE "C" NOT NULL,
  PRIMARY KEY (wh, location, sku)
);

CREATE TABLE dead_letters (
  seq         bigserial PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now(),
  wh          text,
  device      text,
  event_id    text,
  topic       text NOT NULL,
  code        text NOT NULL,
  reason      text NOT NULL,
  raw         bytea NOT NULL, -- truncated to 8 KiB
  source      text NOT NULL -- the authenticated client that delivered it
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);
