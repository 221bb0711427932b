//! The guest's log lines on `palisade dev`'s terminal, as the guest writes them. The
//! runtime writes every line a guest logs (and each line of its stdout and stderr) to the
//! operator's log as a `tracing` event of target `guest` inside the call's `invocation`
//! span; this layer prints those events on stdout, one readable line each:
//!
//! ```text
//! 14:03:07.412 INFO   com.example.hello@0.1.0-dev.3  greeting ada  name=ada
//! ```
//!
//! (time, level, extension and version, message, fields), coloured on a terminal, while
//! the process's own log leaves them out.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use palisade_runtime::capability::log::escape_controls;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The target of the runtime's events for guest log lines.
pub(crate) const GUEST_TARGET: &str = "guest";

/// The name of the runtime's span around one call.
const INVOCATION_SPAN: &str = "invocation";

/// The layer: prints guest log lines to its writer.
pub(crate) struct GuestLines {
    out: Mutex<Box<dyn Write + Send>>,
    ansi: bool,
}

impl GuestLines {
    /// Printing to stdout, coloured when stdout is a terminal.
    pub(crate) fn stdout() -> GuestLines {
        use std::io::IsTerminal as _;
        GuestLines::to(Box::new(std::io::stdout()), std::io::stdout().is_terminal())
    }

    fn to(out: Box<dyn Write + Send>, ansi: bool) -> GuestLines {
        GuestLines {
            out: Mutex::new(out),
            ansi,
        }
    }

    /// What the layer needs to see: the guest's events and the spans of calls.
    pub(crate) fn wants(metadata: &Metadata<'_>) -> bool {
        if metadata.is_span() {
            metadata.name() == INVOCATION_SPAN
        } else {
            metadata.target() == GUEST_TARGET
        }
    }
}

/// The identity of a call, from its `invocation` span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Invocation {
    extension: String,
    version: String,
}

impl Visit for Invocation {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "extension" => self.extension = format!("{value:?}"),
            "version" => self.version = format!("{value:?}"),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "extension" => self.extension = value.to_owned(),
            "version" => self.version = value.to_owned(),
            _ => {}
        }
    }
}

/// One guest line, from its event.
#[derive(Debug, Default)]
struct GuestLine {
    level: String,
    message: String,
    /// The fields as the runtime records them (`Debug` of the key/value pairs).
    fields: String,
}

impl Visit for GuestLine {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "fields" => self.fields = format!("{value:?}"),
            "level" => self.level = format!("{value:?}"),
            // The line the runtime adds when it held lines back (`suppressed`, `install`).
            other => {
                if !self.fields.is_empty() {
                    self.fields.push(' ');
                }
                self.fields.push_str(&format!("{other}={value:?}"));
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "level" => self.level = value.to_owned(),
            _ => self.record_debug(field, &value),
        }
    }
}

impl<S> Layer<S> for GuestLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != INVOCATION_SPAN {
            return;
        }
        let mut invocation = Invocation::default();
        attrs.record(&mut invocation);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(invocation);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != GUEST_TARGET {
            return;
        }
        let mut line = GuestLine::default();
        event.record(&mut line);
        if line.level.is_empty() {
            line.level = event.metadata().level().as_str().to_ascii_lowercase();
        }
        let invocation = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<Invocation>().cloned())
        });
        let time = chrono::Local::now().format("%H:%M:%S%.3f").to_string();
        let text = render(&time, &line, invocation.as_ref(), self.ansi);
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // A closed stdout cannot show the line; nothing else can be done with it.
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    }
}

/// The printed line: time, level, extension@version, message, `key=value` fields.
fn render(time: &str, line: &GuestLine, invocation: Option<&Invocation>, ansi: bool) -> String {
    let level = line.level.to_ascii_uppercase();
    let who = match invocation {
        Some(call) if !call.version.is_empty() => format!("{}@{}", call.extension, call.version),
        Some(call) => call.extension.clone(),
        None => "-".to_owned(),
    };
    let fields = match parse_fields(&line.fields) {
        Some(pairs) => pairs
            .iter()
            .map(|(key, value)| format!("  {}={}", escape_controls(key), shown_value(value)))
            .collect::<String>(),
        None if line.fields.is_empty() => String::new(),
        // Not the runtime's key/value pairs: shown as recorded.
        None => format!("  {}", escape_controls(&line.fields)),
    };
    let message = escape_controls(&line.message);
    if !ansi {
        return format!("{time} {level:<6} {who}  {message}{fields}");
    }
    let colour = match line.level.as_str() {
        "error" | "stderr" => "31",
        "warn" => "33",
        "info" => "32",
        "stdout" => "36",
        _ => "2",
    };
    format!(
        "\x1b[2m{time}\x1b[0m \x1b[{colour}m{level:<6}\x1b[0m \x1b[1m{who}\x1b[0m  {message}\x1b[2m{fields}\x1b[0m"
    )
}

/// A field's value, quoted when it would not read as one word.
fn shown_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

/// The key/value pairs of the `Debug` text of a `Vec<(String, String)>`
/// (`[("k", "v"), ...]`); `None` for any other text.
fn parse_fields(text: &str) -> Option<Vec<(String, String)>> {
    let mut rest = text.trim().strip_prefix('[')?;
    let mut pairs = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(']') {
            return after.trim().is_empty().then_some(pairs);
        }
        if !pairs.is_empty() {
            rest = rest.strip_prefix(',')?.trim_start();
        }
        rest = rest.strip_prefix('(')?;
        let (key, after) = debug_string(rest)?;
        rest = after.trim_start().strip_prefix(',')?.trim_start();
        let (value, after) = debug_string(rest)?;
        rest = after.trim_start().strip_prefix(')')?;
        pairs.push((key, value));
    }
}

/// A string literal as `Debug` writes it at the start of `text`, and the text after it.
fn debug_string(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('"')?.char_indices();
    let body = &text[1..];
    let mut out = String::new();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[at + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                out.push(match escaped {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '0' => '\0',
                    '\\' | '"' | '\'' => escaped,
                    'u' => {
                        if chars.next()?.1 != '{' {
                            return None;
                        }
                        let mut hex = String::new();
                        loop {
                            match chars.next()?.1 {
                                '}' => break,
                                digit if digit.is_ascii_hexdigit() => hex.push(digit),
                                _ => return None,
                            }
                        }
                        char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                    }
                    _ => return None,
                });
            }
            other => out.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn fields_are_read_back_from_their_debug_text() {
        let pairs: Vec<(String, String)> = vec![
            ("name".into(), "ada".into()),
            ("quote".into(), "say \"hi\", (ok)".into()),
            ("escaped".into(), "a\\nb é \u{7f}".into()),
            ("".into(), "".into()),
        ];
        assert_eq!(parse_fields(&format!("{pairs:?}")), Some(pairs));
        assert_eq!(parse_fields("[]"), Some(Vec::new()));
        for other in [
            "",
            "x",
            "[(\"a\")]",
            "[(\"a\", \"b\")",
            "[(\"a\", \"b\")] x",
        ] {
            assert_eq!(parse_fields(other), None, "{other}");
        }
    }

    #[test]
    fn a_line_shows_time_level_extension_message_and_fields() {
        let call = Invocation {
            extension: "com.example.hello".into(),
            version: "0.1.0-dev.3".into(),
        };
        let line = GuestLine {
            level: "info".into(),
            message: "greeting ada".into(),
            fields: format!(
                "{:?}",
                vec![("name", "ada"), ("note", "two words"), ("empty", "")]
            ),
        };
        assert_eq!(
            render("14:03:07.412", &line, Some(&call), false),
            "14:03:07.412 INFO   com.example.hello@0.1.0-dev.3  greeting ada  name=ada  \
             note=\"two words\"  empty=\"\""
        );
        let coloured = render("14:03:07.412", &line, Some(&call), true);
        assert!(
            coloured.contains("\x1b[32mINFO") && coloured.contains("greeting ada"),
            "{coloured:?}"
        );
        let output = GuestLine {
            level: "stderr".into(),
            message: "panicked at src/lib.rs:3".into(),
            fields: "[]".into(),
        };
        assert_eq!(
            render("14:03:07.412", &output, None, false),
            "14:03:07.412 STDERR -  panicked at src/lib.rs:3"
        );
    }

    /// A writer for the layer that keeps what it printed.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The events as the runtime writes them (`capability::log`), inside a span as
    /// `Runtime::execute` opens it, reach the terminal as lines; other events do not.
    #[test]
    fn guest_events_inside_a_call_are_printed_and_nothing_else() {
        let captured = Captured::default();
        let layer = GuestLines::to(Box::new(captured.clone()), false)
            .with_filter(tracing_subscriber::filter::filter_fn(GuestLines::wants));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "invocation",
                request_id = %"req-1",
                tenant = %"dev",
                extension = %"com.example.hello",
                install = %"install-1",
                version = %"0.1.0-dev.2",
                content_hash = %"sha256:00",
                trace_id = tracing::field::Empty,
            );
            let _entered = span.enter();
            let fields: Vec<(String, String)> = vec![("name".into(), "ada".into())];
            let level = "info";
            tracing::info!(target: "guest", level, ?fields, "{}", "greeting ada");
            let fields: Vec<(String, String)> = Vec::new();
            let level = "stdout";
            tracing::info!(target: "guest", level, ?fields, "{}", "printed\\n");
            tracing::info!(target: "palisade_runner", "not a guest line");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(" INFO   com.example.hello@0.1.0-dev.2  greeting ada  name=ada"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(" STDOUT com.example.hello@0.1.0-dev.2  printed\\n"),
            "{text}"
        );
    }
}
