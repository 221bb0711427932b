-- Bookkeeping of extension storage, kept in the same transaction as every write to
-- `extension_storage` (shared with the PostgreSQL copy of this file).
--
-- `extension_storage_install` has one row per install that ever wrote: the last revision
-- handed out (revisions are unique and increasing per install, so a key that is deleted
-- and written again never reuses a revision) and the bytes stored (key + value bytes of
-- every entry). Writers update this row first, which serialises the writes of one install
-- (a row lock in PostgreSQL, the write lock in SQLite) so quota checks see current totals.
--
-- `extension_storage_namespace` counts keys and bytes per namespace.
--
-- In PostgreSQL, `extension_storage.key` must use `COLLATE "C"`, so that key order is
-- byte order as in SQLite.

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
SELECT install_id, MAX(revision), SUM(length(CAST(key AS BLOB)) + length(value))
FROM extension_storage
GROUP BY install_id;

INSERT INTO extension_storage_namespace (install_id, namespace, key_count, byte_count)
SELECT install_id, namespace, COUNT(*), SUM(length(CAST(key AS BLOB)) + length(value))
FROM extension_storage
GROUP BY install_id, namespace;
