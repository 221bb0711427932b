-- Events, schedules and their deliveries: a published event and one delivery per
-- matching subscription are written in one transaction (an outbox); a schedule's firing is
-- an event of its own with one delivery; dispatchers claim deliveries with a lease and
-- record each attempt here.

-- One published event, or one firing of a schedule (`event_key` `schedule:{id}:{slot}`,
-- topic `schedule`). `event_key` is the publisher's id: publishing it again for the tenant
-- answers this row. Kept after its deliveries end, so that the key stays used.
CREATE TABLE extension_event (
    id            TEXT    NOT NULL PRIMARY KEY,
    tenant_id     TEXT    NOT NULL,
    event_key     TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    deliveries    INTEGER NOT NULL,
    published_at  BIGINT  NOT NULL,
    UNIQUE (tenant_id, event_key)
);

-- One schedule of an install: `cron` is five-field cron (UTC) or `@every N{s,m,h}`;
-- `next_fire_at` is the next slot to fire. Rewritten with the install's manifest.
CREATE TABLE extension_schedule (
    id            TEXT    NOT NULL PRIMARY KEY,
    install_id    TEXT    NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    cron          TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    next_fire_at  BIGINT  NOT NULL,
    UNIQUE (install_id, cron, path)
);

CREATE INDEX extension_schedule_due_idx ON extension_schedule (next_fire_at);

-- One event to one subscription, or one firing to its schedule (`trigger` `event` or
-- `schedule`; `queue_id` is the subscription's or the schedule's id). Ids are UUID v7
-- made at publish time, so their order is the publish order; a queue's pending deliveries
-- go out one at a time in it. Removing the subscription or schedule (uninstall, or an
-- upgrade that drops it) removes its deliveries.
CREATE TABLE extension_event_delivery (
    id               TEXT    NOT NULL PRIMARY KEY,
    event_id         TEXT    NOT NULL REFERENCES extension_event (id) ON DELETE CASCADE,
    subscription_id  TEXT    REFERENCES extension_event_subscription (id) ON DELETE CASCADE,
    schedule_id      TEXT    REFERENCES extension_schedule (id) ON DELETE CASCADE,
    queue_id         TEXT    NOT NULL,
    trigger          TEXT    NOT NULL,
    path             TEXT    NOT NULL,
    tenant_id        TEXT    NOT NULL,
    install_id       TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  BIGINT  NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    last_status      INTEGER,
    last_error       TEXT,
    updated_at       BIGINT  NOT NULL
);

CREATE INDEX extension_event_delivery_due_idx
    ON extension_event_delivery (state, next_attempt_at);
CREATE INDEX extension_event_delivery_queue_idx
    ON extension_event_delivery (queue_id, state, id);
CREATE INDEX extension_event_delivery_tenant_idx
    ON extension_event_delivery (tenant_id, state, id);

-- Which event and attempt an execution-log row with trigger `event` delivered.
ALTER TABLE extension_execution_log ADD COLUMN event_id TEXT;
ALTER TABLE extension_execution_log ADD COLUMN attempt INTEGER;

-- Credentials the operator issues for a part of the admin API (scope `events`: publishing
-- events), so that a host application need not hold the admin token. Only the token's
-- SHA-256 is kept; the token is shown once, when it is made.
CREATE TABLE admin_credential (
    name          TEXT    NOT NULL PRIMARY KEY,
    scope         TEXT    NOT NULL,
    token_sha256  TEXT    NOT NULL UNIQUE,
    created_at    BIGINT  NOT NULL
);
