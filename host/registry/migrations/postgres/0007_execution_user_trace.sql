-- Who called, and the trace the call belongs to. `user_id` is the `sub` of the caller's
-- token as the gateway verified it (NULL for events, schedules and callers without a
-- user); `trace_id` is the W3C trace id (32 lowercase hex digits) of the call's trace.
-- Both are NULL on rows written before these columns existed.

ALTER TABLE extension_execution_log ADD COLUMN user_id TEXT;
ALTER TABLE extension_execution_log ADD COLUMN trace_id TEXT;
