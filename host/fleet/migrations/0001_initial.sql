-- micropen fleet database, version 1: what the bridges publish as fleet records
-- (docs/fleet.md "Fleet records"), one table per record kind, each keyed by its natural key.
-- Every row keeps the payload it came from (jsonb) so a later schema can be filled from it.
-- Applied by `micropen fleet db migrate` and by every ingest worker at start, in order, once
-- (schema_version), under an advisory lock so workers starting together do not race.

CREATE TABLE sites (
    site          text PRIMARY KEY,
    first_seen_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE pens (
    serial        text PRIMARY KEY,
    site          text NOT NULL REFERENCES sites (site),
    model         text,
    firmware      text,
    simulated     boolean,
    first_seen_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_boot_id  bigint
);

-- a host session with a pen boot (bridge) or a treatment-log session (export)
CREATE TABLE sessions (
    record_id        text PRIMARY KEY,
    serial           text NOT NULL REFERENCES pens (serial),
    site             text NOT NULL,
    boot_id          bigint NOT NULL,
    host_session     bigint,
    model            text,
    firmware         text,
    protocol_version integer,
    simulated        boolean,
    operator         text,
    started_at       double precision NOT NULL,
    ended_at         double precision,
    outcome          text,
    at               double precision NOT NULL,
    payload          jsonb NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX sessions_by_pen ON sessions (serial, started_at);

-- one row per run of a pen boot: the pen's report (exact strokes) and, from exports, its start
CREATE TABLE runs (
    record_id    text PRIMARY KEY,
    serial       text NOT NULL REFERENCES pens (serial),
    site         text NOT NULL,
    boot_id      bigint NOT NULL,
    run_id       bigint NOT NULL,
    outcome      text,
    mode         text,
    target       bigint,
    strokes      bigint,
    duration_ms  bigint,
    area         text,
    depth_um     integer,
    rate_sps     integer,
    cartridge_id bigint,
    at           double precision NOT NULL,
    payload      jsonb NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (serial, boot_id, run_id)
);
CREATE INDEX runs_by_cartridge ON runs (cartridge_id);

CREATE TABLE events (
    record_id   text PRIMARY KEY,
    serial      text NOT NULL REFERENCES pens (serial),
    site        text NOT NULL,
    boot_id     bigint NOT NULL,
    kind        text NOT NULL,
    code        text NOT NULL,
    value       bigint NOT NULL,
    run_id      bigint NOT NULL,
    pen_t_ms    bigint,
    detail      jsonb,
    at          double precision NOT NULL,
    payload     jsonb NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- a pen event is stored once per boot, whichever way it came (the treatment log's key)
CREATE UNIQUE INDEX events_once ON events (serial, boot_id, kind, code, value, run_id, pen_t_ms)
    WHERE pen_t_ms IS NOT NULL;

CREATE TABLE faults (
    record_id   text PRIMARY KEY,
    serial      text NOT NULL REFERENCES pens (serial),
    site        text NOT NULL,
    boot_id     bigint NOT NULL,
    code        text NOT NULL,
    value       bigint NOT NULL,
    run_id      bigint NOT NULL,
    pen_t_ms    bigint NOT NULL,
    at          double precision NOT NULL,
    payload     jsonb NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (serial, boot_id, code, value, run_id, pen_t_ms)
);

CREATE TABLE overrides (
    record_id   text PRIMARY KEY,
    serial      text NOT NULL REFERENCES pens (serial),
    site        text NOT NULL,
    boot_id     bigint NOT NULL,
    depth_um    integer NOT NULL,
    area        text NOT NULL,
    reason      text NOT NULL CHECK (length(trim(reason)) > 0),
    at          double precision NOT NULL,
    payload     jsonb NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- cartridges seen on pens: mounted/removed/locked/retired (pen events) and used (a run, with
-- the lot): the fleet-wide cartridge registry (issue 15 part 3) reads this table
CREATE TABLE cartridge_mounts (
    record_id    text PRIMARY KEY,
    serial       text NOT NULL REFERENCES pens (serial),
    site         text NOT NULL,
    boot_id      bigint NOT NULL,
    action       text NOT NULL,
    cartridge_id bigint NOT NULL,
    lot          text,
    run_id       bigint NOT NULL,
    pen_t_ms     bigint,
    at           double precision NOT NULL,
    payload      jsonb NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX cartridge_mounts_by_cartridge ON cartridge_mounts (cartridge_id, serial);
CREATE INDEX cartridge_mounts_by_lot ON cartridge_mounts (lot) WHERE lot IS NOT NULL;

CREATE TABLE calibration_records (
    record_id          text PRIMARY KEY,
    serial             text NOT NULL REFERENCES pens (serial),
    site               text NOT NULL,
    certificate_number text NOT NULL,
    procedure          text NOT NULL,
    outcome            text NOT NULL,
    committed          boolean NOT NULL,
    started_at         timestamptz,
    finished_at        timestamptz,
    technician         text NOT NULL,
    station            text NOT NULL,
    interval_days      integer,
    record_sha256      text NOT NULL CHECK (length(record_sha256) = 64),
    record             jsonb NOT NULL,
    at                 double precision NOT NULL,
    ingested_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX calibration_records_by_pen ON calibration_records (serial, finished_at);

-- messages on the records topics that are not a record this version reads (kept, not lost)
CREATE TABLE rejected_messages (
    digest      text PRIMARY KEY,  -- SHA-256 of topic and payload: a redelivery is one row
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
