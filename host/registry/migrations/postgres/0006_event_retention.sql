-- Retention: dispatchers remove events published longer ago than the operator's retention
-- once none of their deliveries is pending. Finding them goes by publish time, and removing
-- an event removes its deliveries by `event_id` (the foreign key's cascade).

CREATE INDEX extension_event_published_idx ON extension_event (published_at);
CREATE INDEX extension_event_delivery_event_idx ON extension_event_delivery (event_id);
