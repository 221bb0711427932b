-- The change sequence: every change to installs (install, upgrade, config, enable,
-- disable, uninstall) and to the trusted publisher keys is numbered and recorded here in
-- the same transaction. Gateways and runners follow it and drop exactly the cached entries
-- a change affects. The single counter row serialises the changes, so numbers commit in
-- order and a follower reading `seq > last` never skips one. Only the latest 10 000
-- changes are kept.

CREATE TABLE registry_change_seq (
    id     INTEGER NOT NULL PRIMARY KEY,
    value  BIGINT  NOT NULL
);

INSERT INTO registry_change_seq (id, value) VALUES (1, 0);

CREATE TABLE registry_change (
    seq           BIGINT  NOT NULL PRIMARY KEY,
    kind          TEXT    NOT NULL,
    tenant_id     TEXT,
    extension_id  TEXT,
    install_id    TEXT,
    changed_at    BIGINT  NOT NULL
);
