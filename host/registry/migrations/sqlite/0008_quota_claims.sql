-- Calls admitted under a quota, per scope and window: gateways claim calls here in chunks
-- (their local allowance) before admitting them, each claim a single conditional upsert
-- that never takes `claimed` past the limit it was made under. `scope` is `tenant` or
-- `install`, `scope_id` the tenant id or install id; `window_start` is the window's start
-- (unix epoch milliseconds, a UTC day). What was consumed is in `extension_quota_usage`.

CREATE TABLE quota_claim (
    scope         TEXT    NOT NULL,
    scope_id      TEXT    NOT NULL,
    window_start  BIGINT  NOT NULL,
    claimed       BIGINT  NOT NULL,
    PRIMARY KEY (scope, scope_id, window_start)
);
