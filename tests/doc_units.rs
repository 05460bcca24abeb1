//! Every systemd unit or drop-in the docs show (```ini blocks in README.md and docs/**/*.md)
//! passes `systemd-analyze verify`. A block with `[Unit]`, `[Socket]`, `[Install]` or an
//! `ExecStart=` is a unit of its own; any other block is a drop-in for
//! contrib/hsm-signer.service and is checked as part of it, as `systemctl edit` would apply
//! it. The units point at the binary built for this test. `systemd-analyze verify` exits 0
//! even when it ignores a misspelt key or a bad value, so any line it prints about the unit
//! fails the test too.
//!
//! Without `systemd-analyze` (and with `CI` unset) the test says why and checks nothing;
//! scripts/test installs systemd, so CI always checks.

use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every .md under docs/.
fn doc_files() -> Result<Vec<PathBuf>> {
    let mut files = vec![repo().join("README.md")];
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The ```ini blocks of a Markdown text: (first line, body).
fn ini_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim() != "```ini" {
            continue;
        }
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        out.push((n + 2, body));
    }
    out
}

/// The units' binary path replaced by the one built for this test.
fn with_binary(unit: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_hsm-signer");
    unit.replace("/usr/local/bin/hsm-signer", bin)
        .replace("/usr/bin/hsm-signer", bin)
}

fn is_unit(block: &str) -> bool {
    block.lines().any(|l| {
        let l = l.trim();
        matches!(l, "[Unit]" | "[Socket]" | "[Install]") || l.starts_with("ExecStart=")
    })
}

/// Writes `block` (a unit, or a drop-in applied to contrib/hsm-signer.service) to `dir` and
/// returns what `systemd-analyze verify` said about it, or None when it was clean.
fn verify(dir: &Path, name: &str, block: &str) -> Result<Option<String>> {
    std::fs::copy(
        repo().join("contrib/hsm-signer.socket"),
        dir.join("hsm-signer.socket"),
    )?;
    let (file, text) = if is_unit(block) {
        let kind = if block.contains("[Socket]") {
            "socket"
        } else {
            "service"
        };
        (dir.join(format!("{name}.{kind}")), with_binary(block))
    } else {
        let base = std::fs::read_to_string(repo().join("contrib/hsm-signer.service"))?;
        (
            dir.join("hsm-signer.service"),
            with_binary(&format!("{base}\n# the drop-in\n{block}")),
        )
    };
    std::fs::write(&file, &text)?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()?;
    let said: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_string)
        .collect();
    Ok((!out.status.success() || !said.is_empty()).then(|| {
        format!(
            "exit {}:\n{}\n--- the unit checked:\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    }))
}

fn have_systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_unit_snippet_in_the_docs_passes_systemd_analyze_verify() -> Result {
    if !have_systemd_analyze() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing in CI (scripts/test installs systemd)"
        );
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return Ok(());
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in doc_files()? {
        let rel = path.strip_prefix(repo())?.display().to_string();
        for (line, block) in ini_blocks(&std::fs::read_to_string(&path)?) {
            let dir = tempfile::tempdir()?;
            if let Some(said) = verify(dir.path(), "hsm-signer-doc", &block)? {
                problems.push(format!("{rel}:{line}: {said}"));
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "only {checked} ```ini blocks found in the docs"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    eprintln!("{checked} unit snippets passed systemd-analyze verify");
    Ok(())
}

#[test]
fn a_misspelt_key_or_a_bad_value_fails_the_check() -> Result {
    if !have_systemd_analyze() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing in CI"
        );
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    assert_eq!(
        verify(dir.path(), "x", "[Service]\nPrivateNetwork=no\n")?,
        None,
        "a good drop-in"
    );
    for bad in [
        "[Service]\nPrivateNetwork=maybe\n",
        "[Service]\nRestrictAdressFamilies=AF_UNIX\n",
    ] {
        let dir = tempfile::tempdir()?;
        assert!(
            verify(dir.path(), "x", bad)?.is_some(),
            "{bad:?} passed systemd-analyze verify"
        );
    }
    Ok(())
}
