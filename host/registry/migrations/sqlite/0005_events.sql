-- Events and their deliveries: a published event and one delivery per matching
-- subscription are written in one transaction (an outbox); dispatchers claim deliveries
-- with a lease and record each attempt here.

-- One published event. `event_key` is the publisher's id: publishing it again for the
-- tenant answers this row. Kept after its deliveries end, so that the key stays used.
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

-- One event to one subscription. Ids are UUID v7 made at publish time, so their order is
-- the publish order; a subscription's pending deliveries go out one at a time in it.
-- Removing the subscription (uninstall, or an upgrade that drops it) removes its
-- deliveries.
CREATE TABLE extension_event_delivery (
    id               TEXT    NOT NULL PRIMARY KEY,
    event_id         TEXT    NOT NULL REFERENCES extension_event (id) ON DELETE CASCADE,
    subscription_id  TEXT    NOT NULL REFERENCES extension_event_subscription (id) ON DELETE CASCADE,
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
CREATE INDEX extension_event_delivery_subscription_idx
    ON extension_event_delivery (subscription_id, state, id);
CREATE INDEX extension_event_delivery_tenant_idx
    ON extension_event_delivery (tenant_id, state, id);

-- Which event and attempt an execution-log row with trigger `event` delivered.
ALTER TABLE extension_execution_log ADD COLUMN event_id TEXT;
ALTER TABLE extension_execution_log ADD COLUMN attempt INTEGER;
