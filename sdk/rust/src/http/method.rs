//! The HTTP request method.

use std::fmt;
use std::str::FromStr;

/// An HTTP request method.
///
/// ```
/// use palisade_sdk::http::Method;
///
/// assert_eq!("GET".parse::<Method>(), Ok(Method::Get));
/// assert_eq!(Method::Patch.as_str(), "PATCH");
/// assert_eq!(Method::Other("PURGE".into()).to_string(), "PURGE");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `CONNECT`
    Connect,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// `PATCH`
    Patch,
    /// Any other method, as sent (methods are case-sensitive).
    Other(String),
}

impl Method {
    /// The method's name as it appears on the wire, e.g. `"GET"`.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(other) => other,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an empty string as a [`Method`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an HTTP method name must not be empty")]
pub struct EmptyMethodError;

impl FromStr for Method {
    type Err = EmptyMethodError;

    /// Parses a method name. The standard names are matched exactly (methods are
    /// case-sensitive); any other non-empty name becomes [`Method::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "" => return Err(EmptyMethodError),
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_round_trip() {
        for name in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            let method: Method = name.parse().unwrap();
            assert!(!matches!(method, Method::Other(_)), "{name}");
            assert_eq!(method.as_str(), name);
            assert_eq!(method.to_string(), name);
        }
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!("get".parse::<Method>(), Ok(Method::Other("get".to_owned())));
    }

    #[test]
    fn empty_method_is_refused() {
        assert_eq!("".parse::<Method>(), Err(EmptyMethodError));
        assert_eq!(
            EmptyMethodError.to_string(),
            "an HTTP method name must not be empty"
        );
    }
}
