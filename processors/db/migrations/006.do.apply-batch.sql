-- One round trip per batch (issue 17): everything a batch of events does to the ledger, in one server-side call.
-- processors/ingest/batch.ts sends `SELECT stockwire_apply_batch($1)` in autocommit, so the statement is its own
-- transaction; before this, a batch cost about 8–14 sequential round trips (BEGIN, inbox, event log, shelf readings,
-- row locks, reservations, stock, versions, global stock, COMMIT).
--
-- The rules are those batch.ts and reservations/consume.ts applied before, in several statements of their own:
--   dedupe    the inbox's key (wh, device, id), inserted in key order; a repeat gets the original outcome, and one
--             whose content digest differs from the stored one (migrations/004) is dead-lettered id_reused;
--   horizon   ledger_horizon locked FOR KEY SHARE once a key is new; a book event older than it is applied as of
--             it (migrations/003), its payload keeping its own ts;
--   anchors   CONTRACT 4 order independence, as processors/ledger/ledger.ts decides it;
--   links     shipped events consume the reservation they name, received events count toward the transfer they
--             name, as processors/ledger/reservations.ts decides it (consume, receiveCheck, transferState);
--   locks     002's order: stock rows by (wh, sku), reservations by id, transfers by id, sku_versions by sku.
-- A data error (SQLSTATE classes 22, 23) aborts the call; batch.ts then splits the batch to isolate the event.
--
-- CHANGING IT: the function and its row types belong to the schema as it is at this migration. A later migration
-- that changes a table it touches must replace it with CREATE OR REPLACE FUNCTION (and ALTER TYPE for its row
-- types), and batch.ts must send what that version expects. Never edit this file once released.
--
-- The batch it takes, built by batch.ts:
--   {"events": [stockwire_batch_event as JSON, …], "dead": [{wh, device, event_id, topic, code, reason, raw, source}, …]}
-- What it answers (bigint as JSON numbers; times as epoch ms):
--   {"repeats":     [[i, sku], …]                                      keys decided before (i: the key's first copy
--                                                                       in the batch; sku: the one the key first named);
--                                                                       every other key of the batch is new, applied
--    "levels":      [[wh, sku, on_hand, reserved], …]                  the rows the keys first named, after the batch
--    "reused":      [[i, reason], …]                                   copies dead-lettered id_reused
--    "stock":       [{wh, sku, on_hand, reserved, version, as_of}, …]  changed rows, each once
--    "negative":    [{wh, sku, on_hand}, …]                             rows that went below zero
--    "versions":    [{sku, version, as_of}, …], "global": [{wh, sku, on_hand, reserved}, …] (wh null: in transit)
--    "shelves":     [{wh, location, sku, qty, ts, device}, …]         shelf_latest rows that changed
--    "notices":     [{wh, kind, sku, message}, …], "transitions": [{id, state}, …]}

-- One valid event of the batch. Identifiers COLLATE "C": they order bytewise, as the tables and ledger.ts order them.
CREATE TYPE stockwire_batch_event AS (
  i           integer, -- position in the batch: outcomes are answered by it
  wh          text COLLATE "C",
  device      text COLLATE "C",
  id          text COLLATE "C",
  type        text,
  sku         text COLLATE "C",
  qty         bigint,
  delta       bigint, -- signed effect on onHand; 0 for counted and level
  ts          timestamptz,
  location    text COLLATE "C",
  reservation text COLLATE "C", -- shipped: the reservation it consumes
  transfer    text COLLATE "C", -- received: the transfer it counts toward (a valid id, else batch.ts raised the notice)
  reason      text,
  payload     text, -- the stored event, as JSON text
  raw         bytea, -- the delivered bytes, truncated to 8 KiB; NULL when they are the payload text's own
  received_at timestamptz,
  topic       text,
  source      text,
  content     bytea -- contentDigest (batch.ts)
);

-- A count of the batch, as the anchor it may become.
CREATE TYPE stockwire_batch_count AS (ts timestamptz, id text COLLATE "C", device text COLLATE "C", qty bigint);

-- What a key of the batch said first: the stored inbox row of a key seen before, the first copy of a new one.
CREATE TYPE stockwire_batch_key AS (
  i       integer, -- its first copy in the batch
  wh      text COLLATE "C",
  device  text COLLATE "C",
  id      text COLLATE "C",
  sku     text COLLATE "C",
  content bytea,
  fresh   boolean
);

CREATE FUNCTION stockwire_apply_batch(batch jsonb)
RETURNS jsonb
LANGUAGE plpgsql
-- PL/pgSQL caches each statement's plan, after five calls a generic one that guesses 100 rows for an unnest. The
-- statements are written for that guess to do no harm (rows of stock are found by index from the batch, never by a
-- join of two large sets): measured, batches of 2,000 events and duplicate storms of 3,000 take as long as with a
-- plan made for each call (plan_cache_mode = force_custom_plan), and a batch of 20 takes 2.2 ms instead of 3.3.
AS $fn$
#variable_conflict use_column
DECLARE
  batch_events stockwire_batch_event[]; -- every valid event, in input order
  batch_keys   stockwire_batch_key[];   -- each key once, in key order
  new_events   stockwire_batch_event[]; -- the first copy of each new key; book events' ts clamped to the horizon
  n_events     integer;
  n_keys       integer := 0;
  n_fresh      integer := 0;
  n_levels     integer := 0;
  n_links      integer := 0;
  n_locked     integer;
  row_wh       text[] := '{}'; -- the stock rows of the batch's new book events, in (wh, sku) order
  row_sku      text[] := '{}';
  horizon      timestamptz := '-infinity';
  ship         record;
  rcpt         record;
  hold         record;
  tr           record;
  why          text;
  taken        bigint;
  freed_wh     text[] := '{}'; -- change of `reserved` per row, from the holds this batch consumed or ended
  freed_sku    text[] := '{}';
  freed_qty    bigint[] := '{}';
  shipped_for  jsonb := '{}'; -- transfer id → qty shipped against its live hold
  notices      jsonb := '[]';
  transitions  jsonb := '[]';
  touched_skus text[] := '{}'; -- skus whose global topic changes: rows changed, quantities in transit changed
  changed_skus text[];
  t_shipped    bigint;
  t_received   bigint;
  t_held       bigint;
  t_next       text;
  repeats      jsonb := '[]';
  levels       jsonb := '[]';
  reused       jsonb := '[]';
  shelves      jsonb := '[]';
  stock_rows   jsonb := '[]';
  negative     jsonb := '[]';
  versions     jsonb := '[]';
  global_rows  jsonb := '[]';
BEGIN
  -- 1. Bad input, kept with its raw bytes.
  IF jsonb_array_length(COALESCE(batch -> 'dead', '[]')) > 0 THEN
    INSERT INTO dead_letters (wh, device, event_id, topic, code, reason, raw, source)
    SELECT d.wh, d.device, d.event_id, d.topic, d.code, d.reason, d.raw, d.source
    FROM ROWS FROM (jsonb_to_recordset(batch -> 'dead')
                    AS (wh text, device text, event_id text, topic text, code text, reason text, raw bytea, source text)) WITH ORDINALITY
         AS d(wh, device, event_id, topic, code, reason, raw, source, n)
    ORDER BY d.n;
  END IF;

  batch_events := ARRAY(SELECT e FROM jsonb_populate_recordset(NULL::stockwire_batch_event, COALESCE(batch -> 'events', '[]')) e ORDER BY e.i);
  n_events := cardinality(batch_events);

  IF n_events > 0 THEN
    -- 2. Inbox: which keys are new. In key order: two transactions inserting the same keys (a duplicate storm over
    -- concurrent batches or processors) then wait on each other in one direction only, never in a deadlock.
    WITH firsts AS (
      SELECT DISTINCT ON (e.wh, e.device, e.id) e.i, e.wh, e.device, e.id, e.sku, e.content
      FROM unnest(batch_events) e ORDER BY e.wh, e.device, e.id, e.i
    ), ins AS (
      INSERT INTO inbox (wh, device, id, sku, content)
      SELECT f.wh, f.device, f.id, f.sku, f.content FROM firsts f ORDER BY f.wh, f.device, f.id
      ON CONFLICT DO NOTHING
      RETURNING inbox.wh, inbox.device, inbox.id
    )
    SELECT array_agg(ROW(f.i, f.wh, f.device, f.id, f.sku, f.content, ins.id IS NOT NULL)::stockwire_batch_key ORDER BY f.wh, f.device, f.id),
           count(*), count(ins.id)
    INTO batch_keys, n_keys, n_fresh
    FROM firsts f LEFT JOIN ins ON ins.wh = f.wh AND ins.device = f.device AND ins.id = f.id;
  END IF;

  IF n_fresh < n_keys THEN
    -- A key decided before: what it said then. A statement of its own, so that a key another transaction committed
    -- while the insert waited on it is seen too.
    batch_keys := ARRAY(
      SELECT ROW(k.i, k.wh, k.device, k.id, COALESCE(i.sku, k.sku), CASE WHEN k.fresh THEN k.content ELSE i.content END, k.fresh)::stockwire_batch_key
      FROM unnest(batch_keys) k
      LEFT JOIN inbox i ON NOT k.fresh AND i.wh = k.wh AND i.device = k.device AND i.id = k.id
      ORDER BY k.wh, k.device, k.id);
    SELECT jsonb_agg(jsonb_build_array(k.i, k.sku)) INTO repeats FROM unnest(batch_keys) k WHERE NOT k.fresh;
  END IF;

  IF n_fresh < n_events THEN
    -- 3. A repeat with other content than its key first had is a reused id, not a resend (migrations/004): kept as a
    -- dead letter, once per key and content however often it came, and answered `duplicate` like any repeat.
    WITH copies AS (
      SELECT DISTINCT ON (e.wh, e.device, e.id, e.content) e.*, k.sku AS first_sku
      FROM unnest(batch_events) e
      JOIN unnest(batch_keys) k ON k.wh = e.wh AND k.device = e.device AND k.id = e.id
      WHERE k.content IS NOT NULL AND e.content <> k.content -- NULL: decided before migrations/004, not checked
      ORDER BY e.wh, e.device, e.id, e.content, e.i
    ), said AS (
      SELECT c.*, format('id %s of %s was first used for other content (sku %s); this copy (%s %s of %s) is not applied',
                         c.id, c.device, c.first_sku, c.type, c.qty, c.sku) AS why
      FROM copies c
    ), kept AS (
      INSERT INTO dead_letters (wh, device, event_id, topic, code, reason, raw, source)
      SELECT s.wh, s.device, s.id, s.topic, 'id_reused', s.why, COALESCE(s.raw, convert_to(s.payload, 'UTF8')), s.source
      FROM said s ORDER BY s.i
    ) -- a data-modifying WITH runs whether or not it is read
    SELECT COALESCE(jsonb_agg(jsonb_build_array(s.i, s.why) ORDER BY s.i), '[]') INTO reused FROM said s;
  END IF;

  IF n_fresh > 0 THEN
    -- 4. The horizon, locked until COMMIT once a key is new: the archive cannot move it while this batch applies
    -- events by it. An event older than the archived history is applied as of the horizon (migrations/003).
    SELECT h.archived_before INTO horizon FROM ledger_horizon h FOR KEY SHARE;
    SELECT array_agg(ROW(e.i, e.wh, e.device, e.id, e.type, e.sku, e.qty, e.delta,
                         CASE WHEN e.type <> 'level' AND e.ts < horizon THEN horizon ELSE e.ts END,
                         e.location, e.reservation, e.transfer, e.reason, e.payload, e.raw, e.received_at, e.topic, e.source, e.content
                        )::stockwire_batch_event ORDER BY e.i),
           count(*) FILTER (WHERE e.type = 'level'),
           count(*) FILTER (WHERE e.reservation IS NOT NULL OR e.transfer IS NOT NULL)
    INTO new_events, n_levels, n_links
    FROM unnest(batch_events) e JOIN unnest(batch_keys) k ON k.i = e.i
    WHERE k.fresh;

    -- 5. Event log (with the rows it touches) and shelf readings.
    WITH logged AS (
      INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, location, reservation, reason, payload, received_at)
      SELECT f.ts, f.wh, f.device, f.id, f.type, f.sku, f.qty, f.delta, f.location, f.reservation, f.reason, f.payload::jsonb, f.received_at
      FROM unnest(new_events) f WHERE f.type <> 'level' ORDER BY f.i
      RETURNING wh, sku
    )
    SELECT COALESCE(array_agg(r.wh ORDER BY r.wh, r.sku), '{}'), COALESCE(array_agg(r.sku ORDER BY r.wh, r.sku), '{}')
    INTO row_wh, row_sku
    FROM (SELECT DISTINCT l.wh, l.sku FROM logged l) r;
  END IF;

  IF n_levels > 0 THEN
    INSERT INTO shelf_readings (ts, wh, location, sku, qty, device, id, payload, received_at)
    SELECT f.ts, f.wh, f.location, f.sku, f.qty, f.device, f.id, f.payload::jsonb, f.received_at
    FROM unnest(new_events) f WHERE f.type = 'level' ORDER BY f.i;
    -- Latest by (ts, id, device), whatever the arrival order; only a newer reading replaces the stored one.
    WITH latest AS (
      INSERT INTO shelf_latest AS s (wh, location, sku, qty, ts, device, id)
      SELECT DISTINCT ON (f.wh, f.location, f.sku) f.wh, f.location, f.sku, f.qty, f.ts, f.device, f.id
      FROM unnest(new_events) f WHERE f.type = 'level'
      ORDER BY f.wh, f.location, f.sku, f.ts DESC, f.id DESC, f.device DESC
      ON CONFLICT (wh, location, sku) DO UPDATE SET qty = EXCLUDED.qty, ts = EXCLUDED.ts, device = EXCLUDED.device, id = EXCLUDED.id
        WHERE (EXCLUDED.ts, EXCLUDED.id, EXCLUDED.device) > (s.ts, s.id, s.device)
      RETURNING s.wh, s.location, s.sku, s.qty, s.ts, s.device
    )
    SELECT COALESCE(jsonb_agg(jsonb_build_object('wh', l.wh, 'location', l.location, 'sku', l.sku, 'qty', l.qty,
                                                 'ts', floor(extract(epoch FROM l.ts) * 1000)::bigint, 'device', l.device)), '[]')
    INTO shelves FROM latest l;
  END IF;

  IF cardinality(row_wh) > 0 THEN
    -- 6. Book stock: lock the touched rows in key order (no deadlocks between processors); create only the missing
    -- ones (rare once a sku is known), then lock those.
    PERFORM 1 FROM stock s
    WHERE (s.wh, s.sku) IN (SELECT r.wh COLLATE "C", r.sku COLLATE "C" FROM unnest(row_wh, row_sku) r(wh, sku))
    ORDER BY s.wh, s.sku FOR UPDATE;
    GET DIAGNOSTICS n_locked = ROW_COUNT;
    IF n_locked < cardinality(row_wh) THEN
      INSERT INTO stock (wh, sku)
      SELECT r.wh, r.sku FROM unnest(row_wh, row_sku) r(wh, sku)
      WHERE NOT EXISTS (SELECT 1 FROM stock s WHERE s.wh = r.wh AND s.sku = r.sku)
      ON CONFLICT DO NOTHING; -- row_wh, row_sku are in key order
      PERFORM 1 FROM stock s
      WHERE (s.wh, s.sku) IN (SELECT r.wh COLLATE "C", r.sku COLLATE "C" FROM unnest(row_wh, row_sku) r(wh, sku))
      ORDER BY s.wh, s.sku FOR UPDATE;
    END IF;

    -- 7. Reservations named by shipped events, transfers named by received ones, whatever their order key (a
    -- shipment before the anchor still took the goods the hold was for), decided as processors/ledger/reservations.ts
    -- decides. Events are facts: a link that does not fit changes nothing and raises a notice. A transfer's hold has
    -- the transfer's id, so one locked read covers both. A hold changes only through an event of its own row.
    IF n_links > 0 THEN
      PERFORM 1 FROM reservations r
      WHERE r.id IN (SELECT COALESCE(f.reservation, f.transfer) FROM unnest(new_events) f)
      ORDER BY r.id FOR UPDATE;

      FOR ship IN SELECT f.* FROM unnest(new_events) f WHERE f.reservation IS NOT NULL ORDER BY f.ts, f.id, f.device LOOP
        SELECT r.* INTO hold FROM reservations r WHERE r.id = ship.reservation;
        why := CASE WHEN NOT FOUND THEN 'unknown' WHEN hold.wh <> ship.wh THEN 'other-warehouse' WHEN hold.sku <> ship.sku THEN 'other-sku' END;
        IF why IS NULL AND hold.state = 'active' AND hold.transfer IS NULL AND hold.expires_at <= now() THEN
          -- Past its expiry, not yet swept: the hold ends now, freeing what it held.
          UPDATE reservations SET remaining = 0, state = 'expired', ended_at = now() WHERE id = hold.id;
          freed_wh := freed_wh || hold.wh::text; freed_sku := freed_sku || hold.sku::text; freed_qty := freed_qty || -hold.remaining;
          notices := notices || jsonb_build_object('wh', ship.wh, 'kind', 'reservation-mismatch', 'sku', ship.sku, 'message',
            format('shipped %s from %s names reservation %s (expired): the hold ends, applied as a shipment', ship.id, ship.device, ship.reservation));
          CONTINUE;
        END IF;
        IF why IS NULL AND hold.state <> 'active' THEN why := hold.state; END IF;
        IF why IS NOT NULL THEN
          notices := notices || jsonb_build_object('wh', ship.wh, 'kind', 'reservation-mismatch', 'sku', ship.sku, 'message',
            format('shipped %s from %s names reservation %s (%s): applied as a shipment, nothing taken from reserved', ship.id, ship.device, ship.reservation, why));
          CONTINUE;
        END IF;
        taken := least(hold.remaining, ship.qty);
        UPDATE reservations SET remaining = remaining - taken, consumed = consumed + taken,
               state = CASE WHEN remaining = taken THEN 'consumed' ELSE 'active' END,
               ended_at = CASE WHEN remaining = taken THEN now() END
        WHERE id = hold.id;
        freed_wh := freed_wh || hold.wh::text; freed_sku := freed_sku || hold.sku::text; freed_qty := freed_qty || -taken;
        IF hold.transfer IS NOT NULL THEN
          shipped_for := jsonb_set(shipped_for, ARRAY[hold.transfer::text], to_jsonb(COALESCE((shipped_for ->> hold.transfer)::bigint, 0) + ship.qty));
        END IF;
      END LOOP;

      IF shipped_for <> '{}' OR EXISTS (SELECT 1 FROM unnest(new_events) f WHERE f.transfer IS NOT NULL) THEN
        PERFORM 1 FROM transfers t
        WHERE t.id IN (SELECT jsonb_object_keys(shipped_for) UNION SELECT f.transfer FROM unnest(new_events) f WHERE f.transfer IS NOT NULL)
        ORDER BY t.id FOR UPDATE;
        -- A receipt counts only at the destination, for its sku, while the transfer is open (as it was before this batch).
        FOR rcpt IN SELECT f.id, f.device, f.wh, f.sku, f.transfer, t.id AS t_id, t.sku AS t_sku, t.to_wh AS t_to, t.state AS t_state
                    FROM unnest(new_events) f LEFT JOIN transfers t ON t.id = f.transfer
                    WHERE f.transfer IS NOT NULL ORDER BY f.ts, f.id, f.device LOOP
          CONTINUE WHEN rcpt.t_id IS NOT NULL AND rcpt.t_to = rcpt.wh AND rcpt.t_sku = rcpt.sku AND rcpt.t_state IN ('reserved', 'in_transit');
          notices := notices || jsonb_build_object('wh', rcpt.wh, 'kind', 'transfer-mismatch', 'sku', rcpt.sku, 'message',
            format('received %s from %s names transfer %s %s: applied as a receipt, the transfer is unchanged', rcpt.id, rcpt.device, rcpt.transfer,
                   CASE WHEN rcpt.t_id IS NULL THEN '(unknown)' WHEN rcpt.t_to <> rcpt.wh THEN '(other-warehouse)'
                        WHEN rcpt.t_sku <> rcpt.sku THEN '(other-sku)' ELSE 'is already ' || rcpt.t_state END));
        END LOOP;
        FOR tr IN
          SELECT t.*, COALESCE((shipped_for ->> t.id)::bigint, 0) AS more_shipped,
                 (SELECT COALESCE(sum(f.qty), 0) FROM unnest(new_events) f WHERE f.transfer = t.id AND f.wh = t.to_wh AND f.sku = t.sku)::bigint AS more_received
          FROM transfers t
          WHERE t.id IN (SELECT jsonb_object_keys(shipped_for) UNION SELECT f.transfer FROM unnest(new_events) f WHERE f.transfer IS NOT NULL)
            AND t.state IN ('reserved', 'in_transit') -- terminal states never change
          ORDER BY t.id
        LOOP
          CONTINUE WHEN tr.more_shipped = 0 AND tr.more_received = 0;
          t_shipped := tr.shipped + tr.more_shipped;
          t_received := tr.received + tr.more_received;
          t_held := COALESCE((SELECT r.remaining FROM reservations r WHERE r.id = tr.id AND r.state = 'active'), 0);
          -- In transit once the source shipped something; completed once the hold is used up and everything shipped
          -- has been received.
          t_next := CASE WHEN t_shipped > 0 AND t_held = 0 AND t_received >= t_shipped THEN 'completed'
                         WHEN t_shipped > 0 THEN 'in_transit' ELSE 'reserved' END;
          IF t_next <> tr.state THEN
            transitions := transitions || jsonb_build_object('id', tr.id, 'state', t_next);
          END IF;
          touched_skus := touched_skus || tr.sku::text;
          UPDATE transfers SET shipped = t_shipped, received = t_received, state = t_next, updated_at = now(),
                 ended_at = CASE WHEN t_next IN ('reserved', 'in_transit') THEN NULL ELSE now() END
          WHERE id = tr.id;
        END LOOP;
      END IF;
    END IF;

    -- 8. Each locked row by the anchor rule of CONTRACT 4 (processors/ledger/ledger.ts). A count ordered after the
    -- anchor becomes the new anchor: onHand = its qty + every delta in the log ordered after it (this batch's
    -- included, inserted above). Otherwise the batch's deltas ordered after the anchor add to onHand.
    WITH freed AS (
      SELECT r.wh COLLATE "C" AS wh, r.sku COLLATE "C" AS sku, sum(r.qty)::bigint AS qty
      FROM unnest(freed_wh, freed_sku, freed_qty) AS r(wh, sku, qty) GROUP BY 1, 2
    ), per_row AS ( -- each locked row with the batch's newest count and its deltas ordered after the stored anchor
      SELECT s.wh, s.sku, s.on_hand, s.anchor_ts, s.anchor_id, s.anchor_device, s.anchor_qty,
             (array_agg(ROW(f.ts, f.id, f.device, f.qty)::stockwire_batch_count ORDER BY f.ts DESC, f.id DESC, f.device DESC)
                FILTER (WHERE f.type = 'counted'))[1] AS c,
             COALESCE(sum(f.delta) FILTER (WHERE s.anchor_ts IS NULL OR (f.ts, f.id, f.device) > (s.anchor_ts, s.anchor_id, s.anchor_device)), 0) AS added
      FROM unnest(new_events) f JOIN stock s ON s.wh = f.wh AND s.sku = f.sku
      WHERE f.type <> 'level'
      GROUP BY s.wh, s.sku, s.on_hand, s.anchor_ts, s.anchor_id, s.anchor_device, s.anchor_qty
    ), locked AS (
      SELECT p.*, p.c IS NOT NULL AND (p.anchor_ts IS NULL OR ((p.c).ts, (p.c).id, (p.c).device) > (p.anchor_ts, p.anchor_id, p.anchor_device)) AS recount
      FROM per_row p
    ), decided AS (
      SELECT w.wh, w.sku, w.on_hand AS old_on_hand, COALESCE(r.qty, 0) AS reserved_delta, w.recount,
             CASE WHEN w.recount THEN (w.c).ts ELSE w.anchor_ts END AS a_ts,
             CASE WHEN w.recount THEN (w.c).id ELSE w.anchor_id END AS a_id,
             CASE WHEN w.recount THEN (w.c).device ELSE w.anchor_device END AS a_device,
             CASE WHEN w.recount THEN (w.c).qty ELSE w.anchor_qty END AS a_qty,
             CASE WHEN w.recount -- counts are rare: one index scan of the row's log each
                  THEN (w.c).qty + COALESCE((SELECT sum(e.delta) FROM events e
                                             WHERE e.wh = w.wh AND e.sku = w.sku AND e.delta <> 0 AND e.ts >= (w.c).ts -- implied; bounds the scan
                                               AND (e.ts, e.id, e.device) > ((w.c).ts, (w.c).id, (w.c).device)), 0)
                  ELSE w.on_hand + w.added -- counts add 0
             END::bigint AS on_hand
      FROM locked w LEFT JOIN freed r ON r.wh = w.wh AND r.sku = w.sku
    ), updated AS (
      UPDATE stock s SET on_hand = d.on_hand, anchor_ts = d.a_ts, anchor_id = d.a_id, anchor_device = d.a_device, anchor_qty = d.a_qty,
             reserved = s.reserved + d.reserved_delta, version = s.version + 1, updated_at = now()
      FROM decided d
      -- version 0: a row this batch created, published even when its events add up to nothing (a display and the
      -- API know the sku at that warehouse, at 0, rather than not at all).
      WHERE s.wh = d.wh AND s.sku = d.sku AND (d.recount OR d.on_hand <> d.old_on_hand OR d.reserved_delta <> 0 OR s.version = 0)
      RETURNING s.wh, s.sku, s.on_hand, s.reserved, s.version, s.updated_at, d.old_on_hand
    )
    SELECT COALESCE(jsonb_agg(jsonb_build_object('wh', u.wh, 'sku', u.sku, 'on_hand', u.on_hand, 'reserved', u.reserved, 'version', u.version,
                                                 'as_of', floor(extract(epoch FROM u.updated_at) * 1000)::bigint) ORDER BY u.wh, u.sku), '[]'),
           COALESCE(jsonb_agg(jsonb_build_object('wh', u.wh, 'sku', u.sku, 'on_hand', u.on_hand) ORDER BY u.wh, u.sku)
                    FILTER (WHERE u.on_hand < 0 AND u.old_on_hand >= 0), '[]'),
           COALESCE(array_agg(u.sku::text), '{}')
    INTO stock_rows, negative, changed_skus
    FROM updated u;
    touched_skus := touched_skus || changed_skus;

    -- 9. The global topic of each touched sku. Its version row is locked after the warehouse rows, so a later
    -- version always carries later numbers. Rows of wh NULL carry the quantity in transit between warehouses.
    IF cardinality(touched_skus) > 0 THEN
      WITH bumped AS (
        INSERT INTO sku_versions AS v (sku, version)
        SELECT DISTINCT k.sku COLLATE "C", 1 FROM unnest(touched_skus) k(sku) ORDER BY 1
        ON CONFLICT (sku) DO UPDATE SET version = v.version + 1, updated_at = now()
        RETURNING v.sku, v.version, v.updated_at
      )
      SELECT (SELECT jsonb_agg(jsonb_build_object('sku', b.sku, 'version', b.version, 'as_of', floor(extract(epoch FROM b.updated_at) * 1000)::bigint) ORDER BY b.sku)
              FROM bumped b),
             (SELECT COALESCE(jsonb_agg(jsonb_build_object('wh', g.wh, 'sku', g.sku, 'on_hand', g.on_hand, 'reserved', g.reserved) ORDER BY g.sku, g.wh), '[]')
              FROM (SELECT s.wh, s.sku, s.on_hand, s.reserved FROM bumped b JOIN stock s ON s.sku = b.sku
                    UNION ALL
                    SELECT NULL, t.sku, sum(t.shipped - t.received)::bigint, 0 FROM bumped b JOIN transfers t ON t.sku = b.sku
                    WHERE t.state = 'in_transit' AND t.shipped > t.received GROUP BY t.sku) g)
      INTO versions, global_rows;
    END IF;
  END IF;

  -- 10. The stock each key's copies are answered with: the row of the sku the key first named.
  IF n_events > 0 THEN
    SELECT COALESCE(jsonb_agg(jsonb_build_array(s.wh, s.sku, s.on_hand, s.reserved)), '[]') INTO levels
    FROM stock s WHERE (s.wh, s.sku) IN (SELECT k.wh, k.sku FROM unnest(batch_keys) k);
  END IF;

  RETURN jsonb_build_object('repeats', repeats, 'levels', levels, 'reused', reused, 'stock', stock_rows, 'negative', negative,
                            'versions', versions, 'global', global_rows, 'shelves', shelves,
                            'notices', notices, 'transitions', transitions);
END
$fn$;
