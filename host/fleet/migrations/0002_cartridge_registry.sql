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

-- every (lot, cartridge, pen) on record: the hosts' claims, and the cartridges the benches'
-- bridges published as used in a run (a bench that ran without asking the registry)
CREATE VIEW cartridge_uses AS
SELECT lot, cartridge_id, pen_serial, min(site) AS site, min(seen) AS first_seen,
       max(seen) AS last_seen
FROM (
    SELECT lot, cartridge_id, pen_serial, site, claimed_at AS seen FROM cartridge_claims
    UNION ALL
    SELECT lot, cartridge_id, serial, site, to_timestamp(at) FROM cartridge_mounts
    WHERE lot IS NOT NULL AND lot <> '' AND cartridge_id > 0
) AS uses
GROUP BY lot, cartridge_id, pen_serial;

-- a lot's trace: per pen and cartridge, the runs (the pens' own stroke counts) and the host
-- sessions of the boots that used it. A run names its cartridge by id only (the lot is read
-- at its start), so runs of a same-numbered cartridge of another lot on that pen count too.
CREATE VIEW cartridge_trace AS
SELECT u.lot, u.site, u.pen_serial, u.cartridge_id, u.first_seen, u.last_seen,
       r.runs, r.strokes, coalesce(s.sessions, ARRAY[]::text[]) AS sessions
FROM cartridge_uses AS u
CROSS JOIN LATERAL (
    SELECT count(*) AS runs, coalesce(sum(runs.strokes), 0)::bigint AS strokes
    FROM runs WHERE runs.serial = u.pen_serial AND runs.cartridge_id = u.cartridge_id
) AS r
CROSS JOIN LATERAL (
    SELECT array_agg(DISTINCT sessions.record_id ORDER BY sessions.record_id) AS sessions
    FROM sessions
    WHERE sessions.serial = u.pen_serial AND sessions.boot_id IN (
        SELECT runs.boot_id FROM runs
        WHERE runs.serial = u.pen_serial AND runs.cartridge_id = u.cartridge_id
        UNION
        SELECT m.boot_id FROM cartridge_mounts AS m
        WHERE m.serial = u.pen_serial AND m.cartridge_id = u.cartridge_id AND m.lot = u.lot)
) AS s;
