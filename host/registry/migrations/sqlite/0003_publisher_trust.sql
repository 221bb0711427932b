-- Publisher trust (shared with the PostgreSQL copy of this file).
--
-- `extension_signer` holds the keys (SHA-256 fingerprints of their DER SubjectPublicKeyInfo)
-- allowed to sign new versions of an extension id: the key of the id's first publish
-- (`source` = 'first-publish') and the keys the operator allowed for it ('operator').
-- Rows may exist before the id is first published: an operator can reserve an id for a key.

CREATE TABLE extension_signer (
    extension_id  TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (extension_id, fingerprint)
);

-- Ids published before this migration belong to the key of their first published version.
INSERT INTO extension_signer (extension_id, fingerprint, source, created_at)
SELECT v.extension_id, v.signer_fingerprint, 'first-publish', v.published_at
FROM extension_version v
WHERE NOT EXISTS (
    SELECT 1 FROM extension_version w
    WHERE w.extension_id = v.extension_id
      AND (w.published_at < v.published_at
           OR (w.published_at = v.published_at AND w.id < v.id))
);

-- The grant a tenant approved, in detail (the effective `capabilities` section: storage
-- namespaces, secret names, HTTP origins), so that an upgrade asking for more than that
-- waits for the tenant's approval. Installs made before this migration approved every
-- capability their version requests.
ALTER TABLE tenant_extension_install ADD COLUMN approved_grant_json TEXT;

UPDATE tenant_extension_install
SET approved_grant_json = (
    SELECT v.capabilities_json FROM extension_version v
    WHERE v.id = tenant_extension_install.version_id
);

-- The publisher keys the platform trusts: publish, install and every runner verify bundle
-- signatures against this set, read again within seconds of a change.
CREATE TABLE publisher_key (
    fingerprint     TEXT    NOT NULL PRIMARY KEY,
    algorithm       TEXT    NOT NULL,
    public_key_pem  TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL
);

-- Signatures a bundle carried before it was signed again: when a bundle is published
-- again with a signature by another (trusted, allowed) key, that signature replaces the
-- stored one and the one it replaces is kept here.
CREATE TABLE bundle_signature_history (
    id                  TEXT    NOT NULL PRIMARY KEY,
    content_hash        TEXT    NOT NULL REFERENCES extension_bundle (content_hash),
    signature           BLOB    NOT NULL,
    signer_fingerprint  TEXT    NOT NULL,
    replaced_at         BIGINT  NOT NULL
);

CREATE INDEX bundle_signature_history_hash_idx ON bundle_signature_history (content_hash);
