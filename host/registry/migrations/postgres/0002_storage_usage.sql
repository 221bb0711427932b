-- Bookkeeping of extension storage (PostgreSQL copy of `sqlite/0002_storage_usage.sql`),
-- kept in the same transaction as every write to `extension_storage`.
--
-- `extension_storage_install` has one row per install that ever wrote: the last revision
-- handed out and the bytes stored (key + value bytes of every entry). Writers update this
-- row first; its row lock serialises the writes of one install, so quota checks see
-- current totals.
--
-- `extension_storage_namespace` counts keys and bytes per namespace.

CREATE TABLE extension_storage_install (
    install_id  TEXT    NOT NULL PRIMARY KEY
                        REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    revision    BIGINT  NOT NULL,
    byte_count  BIGINT  NOT NULL
);

CREATE TABLE extension_storage_namespace (
    install_id  TEXT    NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    namespace   TEXT    NOT NULL,
    key_count   BIGINT  NOT NULL,
    byte_count  BIGINT  NOT NULL,
    PRIMARY KEY (install_id, namespace)
);

-- Entries written before this migration.
INSERT INTO extension_storage_install (install_id, revision, byte_count)
SELECT install_id, MAX(revision), SUM(octet_length(key) + octet_length(value))::BIGINT
FROM extension_storage
GROUP BY install_id;

INSERT INTO extension_storage_namespace (install_id, namespace, key_count, byte_count)
SELECT install_id, namespace, COUNT(*), SUM(octet_length(key) + octet_length(value))::BIGINT
FROM extension_storage
GROUP BY install_id, namespace;
