//! Receiving events and schedule firings.
//!
//! The platform delivers each event a manifest subscribes to (`events[{topic, path}]`),
//! and each firing of a schedule (`schedules[{cron, path}]`), as `POST {path}` with the
//! payload as a JSON body and `x-palisade-*` headers the gateway never lets a caller set.
//! [`Delivery::of`] reads those headers. Delivery is at least once: the same event can
//! arrive again (after a failed attempt, or a dispatcher that died before recording a
//! success), always with the same [`Delivery::event_id`], so handlers should be idempotent
//! on it. Any 2xx answer ends the delivery; anything else is retried later.
//!
//! ```
//! use palisade_sdk::events::Delivery;
//! use palisade_sdk::http::{Request, Response};
//!
//! fn on_ticket(request: Request) -> Response {
//!     let Some(delivery) = Delivery::of(&request) else {
//!         return Response::bad_request("not an event delivery");
//!     };
//!     let ticket: serde_json::Value = match palisade_sdk::events::payload(&request) {
//!         Ok(ticket) => ticket,
//!         Err(_) => return Response::bad_request("payload is not JSON"),
//!     };
//!     // ... act on `ticket` once per `delivery.event_id` ...
//!     # let _ = (delivery, ticket);
//!     Response::new(204)
//! }
//! ```

use crate::http::Request;

/// What started the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A published event.
    Event,
    /// A schedule's firing (topic `schedule`, body `{"cron", "slot_ms"}`).
    Schedule,
}

/// The platform's headers of an event delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// A published event or a schedule's firing.
    pub trigger: Trigger,
    /// The event's topic (`schedule` for a firing).
    pub topic: String,
    /// The platform's id of the event: the same on every attempt.
    pub event_id: String,
    /// The publisher's own id of the event.
    pub key: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// When the event was published (a firing: its slot), RFC 3339 in UTC.
    pub published_at: String,
}

/// The delivery's JSON payload (its body), as `T`.
pub fn payload<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, serde_json::Error> {
    request.json()
}

impl Delivery {
    /// The delivery `request` carries, or `None` when it is not one (an ordinary call, or a
    /// header missing or malformed).
    pub fn of(request: &Request) -> Option<Delivery> {
        let header = |name: &str| request.header(name).map(str::to_owned);
        let trigger = match request.header("x-palisade-trigger")? {
            "event" => Trigger::Event,
            "schedule" => Trigger::Schedule,
            _ => return None,
        };
        Some(Delivery {
            trigger,
            topic: header("x-palisade-event-topic")?,
            event_id: header("x-palisade-event-id")?,
            key: header("x-palisade-event-key")?,
            attempt: request.header("x-palisade-event-attempt")?.parse().ok()?,
            published_at: header("x-palisade-event-published-at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;

    fn delivery(trigger: &str) -> Request {
        delivery_with_attempt(trigger, "2")
    }

    fn delivery_with_attempt(trigger: &str, attempt: &str) -> Request {
        Request::new(Method::Post, "/on/ticket")
            .with_header("x-palisade-trigger", trigger)
            .with_header("x-palisade-event-topic", "ticket.created")
            .with_header("x-palisade-event-id", "019a-1")
            .with_header("x-palisade-event-key", "t-1")
            .with_header("x-palisade-event-attempt", attempt)
            .with_header("x-palisade-event-published-at", "2026-12-07T12:00:00.000Z")
    }

    #[test]
    fn a_delivery_is_read_from_its_headers() {
        let read = Delivery::of(&delivery("event")).unwrap();
        assert_eq!(read.trigger, Trigger::Event);
        assert_eq!(read.topic, "ticket.created");
        assert_eq!(read.event_id, "019a-1");
        assert_eq!(read.key, "t-1");
        assert_eq!(read.attempt, 2);
        assert_eq!(
            Delivery::of(&delivery("schedule")).unwrap().trigger,
            Trigger::Schedule
        );
    }

    #[test]
    fn an_ordinary_call_or_a_broken_header_is_not_a_delivery() {
        assert_eq!(
            Delivery::of(&Request::new(Method::Post, "/on/ticket")),
            None
        );
        assert_eq!(Delivery::of(&delivery("webhook")), None);
        assert_eq!(Delivery::of(&delivery_with_attempt("event", "two")), None);
    }
}
