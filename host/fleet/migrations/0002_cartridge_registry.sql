-- The fleet-wide cartridge registry (hazard 4): claims made by hosts before a run, lots
-- recalled fleet-wide, and views over every use of a cartridge on record.

CREATE TABLE cartridge_claims (
    lot text NOT NULL,
    cartridge_id bigint NOT NULL CHECK (cartridge_id BETWEEN 1 AND 4294967295),
    pen_serial text NOT NULL,
    site text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lot, cartridge_id)
);

CREATE TABLE recalled_lots (
    lot text PRIMARY KEY,
    reason text NOT NULL CHECK (length(btrim(reason)) >= 5),
    recalled_by text NOT NULL,
    recalled_at timestamptz NOT NULL DEFAULT now()
);

-- every (lot, cartridge, pen) on record: claims, and (after the ingest's tables) what benches
-- published without asking the registry
CREATE VIEW cartridge_uses AS
SELECT lot, cartridge_id, pen_serial, site, claimed_at AS first_seen, claimed_at AS last_seen
FROM cartridge_claims;

CREATE VIEW cartridge_trace AS
SELECT lot, site, pen_serial, cartridge_id, min(first_seen) AS first_seen,
       max(last_seen) AS last_seen, 0::bigint AS runs, 0::bigint AS strokes,
       ARRAY[]::text[] AS sessions
FROM cartridge_uses GROUP BY lot, site, pen_serial, cartridge_id;
