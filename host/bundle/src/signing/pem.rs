//! Minimal PEM (RFC 7468) block reading and writing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One decoded PEM block.
pub(crate) struct PemBlock {
    /// The label between `BEGIN ` and `-----`, e.g. `PUBLIC KEY`.
    pub label: String,
    /// The decoded body.
    pub der: Vec<u8>,
}

/// Reads every `-----BEGIN …-----` … `-----END …-----` block of `text`, in order. Text
/// outside blocks is ignored. A malformed block yields an error in its place.
pub(crate) fn parse_blocks(text: &str) -> Vec<Result<PemBlock, String>> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = boundary(line, "BEGIN") else {
            continue;
        };
        let mut body = String::new();
        let mut ended = false;
        let mut error = None;
        for line in lines.by_ref() {
            if let Some(end) = boundary(line, "END") {
                if end != label {
                    error = Some(format!("`BEGIN {label}` is closed by `END {end}`"));
                }
                ended = true;
                break;
            }
            if boundary(line, "BEGIN").is_some() {
                error = Some(format!("`BEGIN {label}` has no `END {label}` line"));
                ended = true;
                break;
            }
            if line.contains(':') {
                error = Some("PEM headers (e.g. encryption) are not supported".to_owned());
            }
            body.push_str(line);
        }
        let result = match (ended, error) {
            (false, _) => Err(format!("`BEGIN {label}` has no `END {label}` line")),
            (true, Some(error)) => Err(error),
            (true, None) => STANDARD
                .decode(body.as_bytes())
                .map(|der| PemBlock {
                    label: label.to_owned(),
                    der,
                })
                .map_err(|e| format!("the base64 body of `{label}` is malformed: {e}")),
        };
        blocks.push(result);
    }
    blocks
}

/// The label of a `-----{kind} label-----` line.
fn boundary<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

/// Writes `der` as a PEM block with 64-column lines.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_and_reads_several_blocks() {
        let text = format!(
            "comment\n{}\n# other\n{}",
            encode("PUBLIC KEY", b"one"),
            encode("CERTIFICATE", &[7u8; 100])
        );
        let blocks: Vec<_> = parse_blocks(&text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].label.as_str(), blocks[0].der.as_slice()),
            ("PUBLIC KEY", &b"one"[..])
        );
        assert_eq!(blocks[1].label, "CERTIFICATE");
        assert_eq!(blocks[1].der, [7u8; 100]);
    }

    #[test]
    fn reports_malformed_blocks() {
        assert!(parse_blocks("-----BEGIN PUBLIC KEY-----\nAAAA\n")[0].is_err());
        assert!(parse_blocks("-----BEGIN A-----\nAAAA\n-----END B-----\n")[0].is_err());
        assert!(parse_blocks("-----BEGIN A-----\n!!!!\n-----END A-----\n")[0].is_err());
        assert!(
            parse_blocks("-----BEGIN A-----\nProc-Type: 4\nAAAA\n-----END A-----\n")[0].is_err()
        );
        assert!(parse_blocks("no blocks here").is_empty());
    }
}
