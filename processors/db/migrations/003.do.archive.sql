-- Retention without losing stock. The archive folds the events it is about to drop into stock_baseline, one row per
-- (wh, sku), in the transaction that drops them; stock = baseline + the events still in the log (rebuild.ts).
-- That sum is exact only while every event in the log is ordered after every archived one: so an event older than
-- the horizon when it arrives is applied as of the horizon (batch.ts clamps its ts; its payload keeps the original).

-- One row: the log holds no event ordered before archived_before. Ingest locks it FOR KEY SHARE in each batch's
-- transaction; the archive locks it FOR UPDATE, so a batch never clamps by a horizon that moves under it.
CREATE TABLE ledger_horizon (
  one             boolean PRIMARY KEY DEFAULT true CHECK (one),
  archived_before timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO ledger_horizon DEFAULT VALUES;

-- What the archived events of a row add up to, by the rule of CONTRACT section 4: the latest archived count (none:
-- anchor_ts NULL) and the sum of the archived deltas ordered after it.
CREATE TABLE stock_baseline (
  wh              text COLLATE "C" NOT NULL,
  sku             text COLLATE "C" NOT NULL,
  anchor_ts       timestamptz,
  anchor_id       text COLLATE "C",
  anchor_device   text COLLATE "C",
  anchor_qty      bigint,
  delta           bigint NOT NULL DEFAULT 0,
  events          bigint NOT NULL DEFAULT 0, -- archived events of the row, for the record
  archived_before timestamptz NOT NULL,
  PRIMARY KEY (wh, sku)
);

-- Folds every event ordered before `older_than` (on a hypertable: before the end of the newest chunk wholly older
-- than it, so whole chunks are dropped) into stock_baseline, removes them, and moves the horizon. Idempotent.
CREATE FUNCTION stockwire_archive_events(older_than timestamptz)
RETURNS TABLE (archived_before timestamptz, archived bigint)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  horizon timestamptz;
  cutoff  timestamptz;
  hyper   boolean := false;
  n       bigint := 0;
BEGIN
  IF to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL THEN -- TimescaleDB's catalog; EXECUTE: absent on plain PostgreSQL
    EXECUTE $q$SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable WHERE schema_name = current_schema() AND table_name = 'events')$q$
      INTO hyper;
  END IF;
  SELECT l.archived_before INTO horizon FROM ledger_horizon l FOR UPDATE;
  IF hyper THEN
    EXECUTE $q$SELECT max(range_end) FROM timescaledb_information.chunks
               WHERE hypertable_schema = current_schema() AND hypertable_name = 'events' AND range_end <= $1$q$
      INTO cutoff USING older_than;
  ELSE
    cutoff := date_trunc('milliseconds', older_than); -- event times are whole ms: batch.ts clamps to this exactly
  END IF;
  IF cutoff IS NULL OR cutoff <= horizon THEN
    RETURN QUERY SELECT horizon, 0::bigint;
    RETURN;
  END IF;

  -- Every event here is ordered after every event already in the baseline (they are all before the horizon), so a
  -- count among them supersedes the baseline's, and without one their deltas add to it.
  WITH ev AS (
    SELECT e.wh, e.sku, e.ts, e.id, e.device, e.type, e.qty, e.delta FROM events e WHERE e.ts < cutoff
  ), latest AS (
    SELECT DISTINCT ON (ev.wh, ev.sku) ev.wh, ev.sku, ev.ts, ev.id, ev.device, ev.qty
    FROM ev WHERE ev.type = 'counted'
    ORDER BY ev.wh, ev.sku, ev.ts DESC, ev.id DESC, ev.device DESC
  ), folded AS (
    SELECT ev.wh, ev.sku, c.ts AS a_ts, c.id AS a_id, c.device AS a_device, c.qty AS a_qty,
           COALESCE(sum(ev.delta) FILTER (WHERE c.ts IS NULL OR (ev.ts, ev.id, ev.device) > (c.ts, c.id, c.device)), 0)::bigint AS d,
           count(*)::bigint AS n
    FROM ev LEFT JOIN latest c ON c.wh = ev.wh AND c.sku = ev.sku
    GROUP BY ev.wh, ev.sku, c.ts, c.id, c.device, c.qty
  ), merged AS (
    INSERT INTO stock_baseline AS b (wh, sku, anchor_ts, anchor_id, anchor_device, anchor_qty, delta, events, archived_before)
    SELECT f.wh, f.sku, f.a_ts, f.a_id, f.a_device, f.a_qty, f.d, f.n, cutoff FROM folded f
    ON CONFLICT (wh, sku) DO UPDATE SET
      anchor_ts       = CASE WHEN EXCLUDED.anchor_ts IS NULL THEN b.anchor_ts ELSE EXCLUDED.anchor_ts END,
      anchor_id       = CASE WHEN EXCLUDED.anchor_ts IS NULL THEN b.anchor_id ELSE EXCLUDED.anchor_id END,
      anchor_device   = CASE WHEN EXCLUDED.anchor_ts IS NULL THEN b.anchor_device ELSE EXCLUDED.anchor_device END,
      anchor_qty      = CASE WHEN EXCLUDED.anchor_ts IS NULL THEN b.anchor_qty ELSE EXCLUDED.anchor_qty END,
      delta           = CASE WHEN EXCLUDED.anchor_ts IS NULL THEN b.delta + EXCLUDED.delta ELSE EXCLUDED.delta END,
      events          = b.events + EXCLUDED.events,
      archived_before = EXCLUDED.archived_before
    RETURNING b.wh
  ) -- a data-modifying WITH runs whether or not it is read
  SELECT COALESCE(sum(f.n), 0)::bigint INTO n FROM folded f;

  IF hyper THEN
    EXECUTE 'SELECT count(*) FROM drop_chunks(''events'', older_than => $1)' USING cutoff;
  ELSE
    DELETE FROM events e WHERE e.ts < cutoff;
  END IF;
  UPDATE ledger_horizon SET archived_before = cutoff;
  RETURN QUERY SELECT cutoff, n;
END
$fn$;

-- TimescaleDB's job scheduler calls this (migrate.ts adds the job in place of a retention policy on events).
CREATE PROCEDURE stockwire_archive_job(job_id integer, config jsonb)
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM stockwire_archive_events(now() - make_interval(days => (config ->> 'retention_days')::integer));
END
$fn$;
