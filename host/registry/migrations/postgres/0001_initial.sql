-- Palisade registry schema, version 1 (PostgreSQL copy of `sqlite/0001_initial.sql`).
--
-- Conventions (shared with the SQLite copy of this file):
--   * ids are TEXT (extension ids are the manifest id, everything else a UUID);
--   * timestamps are BIGINT unix epoch milliseconds (UTC);
--   * JSON documents are TEXT;
--   * flags are BOOLEAN;
--   * binary payloads are BYTEA (BLOB in SQLite).
--
-- Storage keys use `COLLATE "C"`, so that key order (and so list pagination) is byte
-- order, as in SQLite.

CREATE TABLE extension_registry (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    publisher   TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE extension_bundle (
    content_hash   TEXT    NOT NULL PRIMARY KEY,
    object_key     TEXT    NOT NULL,
    signature_key  TEXT    NOT NULL,
    size_bytes     BIGINT  NOT NULL,
    created_at     BIGINT  NOT NULL
);

CREATE TABLE extension_version (
    id                      TEXT    NOT NULL PRIMARY KEY,
    extension_id            TEXT    NOT NULL REFERENCES extension_registry (id),
    version                 TEXT    NOT NULL,
    content_hash            TEXT    NOT NULL REFERENCES extension_bundle (content_hash),
    manifest_json           TEXT    NOT NULL,
    capabilities_json       TEXT    NOT NULL,
    component_imports_json  TEXT    NOT NULL,
    signer_fingerprint      TEXT    NOT NULL,
    published_at            BIGINT  NOT NULL,
    UNIQUE (extension_id, version)
);

CREATE INDEX extension_version_content_hash_idx ON extension_version (content_hash);

CREATE TABLE tenant_extension_install (
    id                          TEXT     NOT NULL PRIMARY KEY,
    tenant_id                   TEXT     NOT NULL,
    extension_id                TEXT     NOT NULL REFERENCES extension_registry (id),
    version_id                  TEXT     NOT NULL REFERENCES extension_version (id),
    approved_capabilities_json  TEXT     NOT NULL,
    config_json                 TEXT     NOT NULL,
    enabled                     BOOLEAN  NOT NULL,
    created_at                  BIGINT   NOT NULL,
    updated_at                  BIGINT   NOT NULL,
    UNIQUE (tenant_id, extension_id)
);

CREATE INDEX tenant_extension_install_version_idx ON tenant_extension_install (version_id);
CREATE INDEX tenant_extension_install_extension_idx ON tenant_extension_install (extension_id);

CREATE TABLE extension_event_subscription (
    id          TEXT  NOT NULL PRIMARY KEY,
    install_id  TEXT  NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    topic       TEXT  NOT NULL,
    path        TEXT  NOT NULL,
    UNIQUE (install_id, topic, path)
);

CREATE INDEX extension_event_subscription_topic_idx ON extension_event_subscription (topic);

-- No foreign keys: the log outlives uninstalls and records calls that resolved to nothing.
CREATE TABLE extension_execution_log (
    id                 TEXT    NOT NULL PRIMARY KEY,
    request_id         TEXT    NOT NULL,
    tenant_id          TEXT    NOT NULL,
    extension_id       TEXT    NOT NULL,
    install_id         TEXT,
    version_id         TEXT,
    content_hash       TEXT,
    trigger            TEXT    NOT NULL,
    method             TEXT    NOT NULL,
    path               TEXT    NOT NULL,
    status             BIGINT,
    outcome            TEXT    NOT NULL,
    error_code         TEXT,
    duration_ms        BIGINT  NOT NULL,
    fuel_consumed      BIGINT,
    peak_memory_bytes  BIGINT,
    egress_bytes       BIGINT  NOT NULL,
    log_excerpt        TEXT,
    created_at         BIGINT  NOT NULL
);

CREATE INDEX extension_execution_log_tenant_idx
    ON extension_execution_log (tenant_id, created_at);
CREATE INDEX extension_execution_log_tenant_extension_idx
    ON extension_execution_log (tenant_id, extension_id, created_at);
CREATE INDEX extension_execution_log_request_idx
    ON extension_execution_log (request_id);

CREATE TABLE extension_quota_usage (
    install_id    TEXT    NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    metric        TEXT    NOT NULL,
    window_start  BIGINT  NOT NULL,
    amount        BIGINT  NOT NULL,
    PRIMARY KEY (install_id, metric, window_start)
);

CREATE TABLE extension_storage (
    install_id  TEXT              NOT NULL
                                  REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    namespace   TEXT              NOT NULL,
    key         TEXT COLLATE "C"  NOT NULL,
    value       BYTEA             NOT NULL,
    revision    BIGINT            NOT NULL,
    updated_at  BIGINT            NOT NULL,
    PRIMARY KEY (install_id, namespace, key)
);

CREATE TABLE extension_secret (
    install_id  TEXT    NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    nonce       BYTEA   NOT NULL,
    ciphertext  BYTEA   NOT NULL,
    key_id      TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (install_id, name)
);
