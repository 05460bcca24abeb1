//! How commands print: text or `--json`, values from a token escaped, `--out` files.

use std::process::ExitCode;

use anyhow::{Context, Result};

/// `--out FILE`: a regular file is replaced by rename; a device or pipe is written to.
pub(super) fn write_out(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    crate::outfile::write(path, bytes, 0o644, crate::outfile::Existing::Replace)
        .with_context(|| format!("writing {}", path.display()))
}

/// A value from a token, a certificate or a `.p12`, for text output: whole, with control,
/// format and bidi characters escaped (`--json` keeps the exact value).
pub(super) fn shown(text: &str) -> String {
    crate::text::printable(text, crate::text::WHOLE)
}

/// Prints `value` as pretty JSON with `--json`, else as `text` makes it.
pub(super) fn print<T: serde::Serialize>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text(value));
    }
    Ok(ExitCode::SUCCESS)
}
