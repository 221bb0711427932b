-- Answers kept for idempotent replay, shared by every gateway of a platform: a non-GET
-- call with `x-idempotency-key` answered by its guest is stored here under (tenant,
-- extension, key) until `expires_at` (unix epoch milliseconds), so that a retry reaching
-- any gateway is answered from it. `fingerprint` is the SHA-256 (hex) of the request a
-- repeat must match; `headers_json` the answer's headers as [name, base64 value] pairs.
-- Expired rows are deleted by the gateways as they write.

CREATE TABLE idempotent_answer (
    tenant_id     TEXT    NOT NULL,
    extension_id  TEXT    NOT NULL,
    idem_key      TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    headers_json  TEXT    NOT NULL,
    body          BYTEA   NOT NULL,
    template      TEXT,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, extension_id, idem_key)
);

CREATE INDEX idempotent_answer_tenant_created_idx ON idempotent_answer (tenant_id, created_at);
