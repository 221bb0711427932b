//! Event topics and the patterns subscriptions match them with.
//!
//! A topic is dot-separated segments (`ticket.created`, `billing.invoice.paid`); each
//! segment is letters, digits, `_`, `:` or `-`. A subscription's pattern is a topic in which
//! a whole segment may be `*` (exactly one segment) and the last segment may be `#` (one or
//! more segments): `ticket.*` matches `ticket.created` but not `ticket.a.b`; `billing.#`
//! matches `billing.invoice` and `billing.invoice.paid` but not `billing`.

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// Why a topic or pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// No text at all.
    #[error("is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`].
    #[error("is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// Two dots in a row, or a dot at an end.
    #[error("has an empty segment (two dots in a row, or a dot at an end)")]
    EmptySegment,
    /// A segment with a character outside the allowed set (or a misplaced wildcard).
    #[error(
        "segment `{0}` may hold only letters, digits, `_`, `:` and `-` \
         (a whole segment may be `*`, and the last may be `#`, in a subscription only)"
    )]
    BadSegment(String),
    /// `#` before the last segment.
    #[error("`#` may only be the last segment")]
    HashNotLast,
}

/// The segments of `text`, each checked; `wildcards` allows `*` and a trailing `#`.
fn segments(text: &str, wildcards: bool) -> Result<Vec<&str>, TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    let parts: Vec<&str> = text.split('.').collect();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        match *part {
            "" => return Err(TopicError::EmptySegment),
            "*" if wildcards => {}
            "#" if wildcards && i == last => {}
            "#" if wildcards => return Err(TopicError::HashNotLast),
            literal => {
                let valid = literal
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'));
                if !valid {
                    return Err(TopicError::BadSegment(literal.to_owned()));
                }
            }
        }
    }
    Ok(parts)
}

/// Checks a published topic: segments only, no wildcard.
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    segments(topic, false).map(drop)
}

/// A subscription's pattern, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Checks `pattern`.
    pub fn parse(pattern: &str) -> Result<Self, TopicError> {
        segments(pattern, true)?;
        Ok(TopicPattern(pattern.to_owned()))
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the published `topic` matches the pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut pattern = self.0.split('.');
        let mut topic = topic.split('.');
        loop {
            match (pattern.next(), topic.next()) {
                // `#` takes the rest: at least the segment in front of it.
                (Some("#"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(want), Some(got)) if want == got => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        TopicPattern::parse(pattern).unwrap().matches(topic)
    }

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(matches("ticket.created", "ticket.created"));
        assert!(!matches("ticket.created", "ticket.created.late"));
        assert!(!matches("ticket.created", "ticket"));
        assert!(!matches("ticket.created", "ticket.closed"));
    }

    #[test]
    fn a_star_matches_exactly_one_segment() {
        assert!(matches("ticket.*", "ticket.created"));
        assert!(matches("*.created", "order.created"));
        assert!(!matches("ticket.*", "ticket"));
        assert!(!matches("ticket.*", "ticket.a.b"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
    }

    #[test]
    fn a_trailing_hash_matches_one_or_more_segments() {
        assert!(matches("billing.#", "billing.invoice"));
        assert!(matches("billing.#", "billing.invoice.paid"));
        assert!(!matches("billing.#", "billing"));
        assert!(!matches("billing.#", "shipping.invoice"));
        assert!(matches("#", "anything.at.all"));
        assert!(matches("*.#", "a.b"));
        assert!(!matches("*.#", "a"));
    }

    #[test]
    fn bad_topics_and_patterns_say_what_is_wrong() {
        assert_eq!(check_topic(""), Err(TopicError::Empty));
        assert_eq!(check_topic("a..b"), Err(TopicError::EmptySegment));
        assert_eq!(check_topic("a."), Err(TopicError::EmptySegment));
        assert_eq!(
            check_topic("ticket.*"),
            Err(TopicError::BadSegment("*".into()))
        );
        assert_eq!(
            check_topic("a b"),
            Err(TopicError::BadSegment("a b".into()))
        );
        assert_eq!(check_topic(&"a".repeat(129)), Err(TopicError::TooLong));
        assert_eq!(TopicPattern::parse("a.#.b"), Err(TopicError::HashNotLast));
        assert_eq!(
            TopicPattern::parse("a.b*"),
            Err(TopicError::BadSegment("b*".into()))
        );
        assert!(check_topic("tenant:42.ticket_v2.created-late").is_ok());
    }
}
