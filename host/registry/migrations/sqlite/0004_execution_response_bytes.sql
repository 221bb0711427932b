-- Bytes of the guest's answer body that went out to the caller. With bodies streamed, an
-- answer can be cut after its status was sent (over its limit, past its deadline); the
-- row then keeps the status, the reason in `error_code`, and how far the body got here.
-- NULL on rows written before this column existed and on calls that never answered.

ALTER TABLE extension_execution_log ADD COLUMN response_bytes BIGINT;
