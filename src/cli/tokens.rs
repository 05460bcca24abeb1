//! `hsm-signer tokens`: the PKCS#11 modules found and the tokens each one sees.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::output::{print, shown};
use crate::token::{discover_modules, probe_module};

pub(super) fn run(module: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let modules = match module {
        Some(m) => vec![m],
        None => discover_modules(),
    };
    let mut found = Vec::new();
    for path in modules {
        let probe = probe_module(&path);
        let mut entry = match probe.result {
            Ok(tokens) => serde_json::json!({"module": path, "tokens": tokens}),
            Err(e) => serde_json::json!({"module": path, "error": e.to_string()}),
        };
        if !probe.chatter.is_empty() {
            entry["module_stderr_lines"] = probe.chatter.len().into();
        }
        found.push(entry);
    }
    print(&found, json, |found| {
        let mut text = String::new();
        for m in found {
            text.push_str(&format!("{}\n", m["module"].as_str().unwrap_or("?")));
            if let Some(err) = m["error"].as_str() {
                text.push_str(&format!(
                    "  cannot use it: {}\n",
                    err.lines().next().unwrap_or(err)
                ));
            }
            if let Some(lines) = m["module_stderr_lines"].as_u64() {
                text.push_str(&format!(
                    "  (the module printed {lines} line(s) of its own diagnostics; -v shows them)\n"
                ));
            }
            for t in m["tokens"].as_array().into_iter().flatten() {
                let field = |name: &str| shown(t[name].as_str().unwrap_or(""));
                text.push_str(&format!(
                    "  token \"{}\"  serial {}  ({} {})\n",
                    field("label"),
                    field("serial"),
                    field("manufacturer"),
                    field("model")
                ));
            }
        }
        if text.is_empty() {
            text = "No PKCS#11 modules found.\n".into();
        }
        text
    })
}
