//! `hsm-signer audit verify`: reads one or more files as one chain, line by line, and
//! says where it breaks. [`Chain`] checks the links as [`Checker`] checks checkpoints:
//! one line at a time, then `finish`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{self, GENESIS};
use super::checkpoint::Checker;
use super::error::AuditError;
use super::record::Line;

/// The result of checking one or more files' chain.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Lines read, over all files.
    pub lines: u64,
    /// Where the chain breaks: file, line (1-based) and why.
    pub broken: Option<Broken>,
    /// SHA-256 of the last line: note it elsewhere to detect truncation later.
    pub head: String,
    /// Checkpoints whose signature was checked.
    pub checkpoints: u64,
    /// Things worth a look that do not break the chain (an unsigned tail, a first file
    /// that continues an earlier one).
    pub notes: Vec<String>,
}

/// Where and why a chain breaks.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// The line, 1-based, in that file.
    pub line: u64,
    /// Why.
    pub why: String,
}

/// The links of a chain, checked one line at a time: every line's `prev` against the
/// hash of the line before, `seq` counting up by one, each later file starting with a
/// `log_opened` record that continues the one before.
#[derive(Default)]
struct Chain {
    /// The hash of the last line read; `None` before the first.
    prev: Option<String>,
    expected_seq: Option<u64>,
    notes: Vec<String>,
}

/// Where a line is: its file (and whether that is the first file given) and its number.
struct At<'a> {
    path: &'a Path,
    first_file: bool,
    number: u64,
}

impl Chain {
    /// Checks `line` against the lines before it.
    fn check(&mut self, line: &Line, at: &At) -> Result<(), String> {
        let opens = line.record.op == "log_opened";
        match &self.prev {
            None => {
                // The first line read: the chain's start, or a file that continues one
                // not given here.
                let starts = line.seq == 1 && line.prev == GENESIS;
                if !starts && opens && at.first_file && at.number == 1 {
                    self.notes.push(format!(
                        "{} continues an earlier file (seq {}, previous head {}); give that file first to check the link",
                        at.path.display(),
                        line.seq - 1,
                        line.prev
                    ));
                } else if !starts {
                    return Err("the file does not start the chain (seq 1) nor continue one (log_opened): lines at the start were removed".into());
                }
            }
            Some(prev) => {
                if at.number == 1 && !opens {
                    return Err("a later file must start with the log_opened record that links it to the file before".into());
                }
                if &line.prev != prev {
                    return Err(
                        "prev does not match the line before: a line was removed, edited or moved"
                            .into(),
                    );
                }
                if let Some(expected) = self.expected_seq.filter(|&s| s != line.seq) {
                    return Err(format!("seq {} where {expected} was expected", line.seq));
                }
            }
        }
        Ok(())
    }

    /// Takes `line`, read from `text` and checked, as the last link.
    fn advance(&mut self, text: &str, line: &Line) {
        self.expected_seq = Some(line.seq + 1);
        self.prev = Some(chain::hash(text.as_bytes()));
    }

    /// The hash of the last line read, or [`GENESIS`] when none was.
    fn head(&self) -> String {
        self.prev.clone().unwrap_or_else(|| GENESIS.into())
    }
}

/// Checks `files`, in order, as one chain (see [`Chain`]). With `checkpoints`, also
/// every checkpoint's signature and the gaps between them (see [`Checker`]).
pub fn verify(
    files: &[PathBuf],
    mut checkpoints: Option<Checker>,
) -> Result<Verification, AuditError> {
    let mut chain = Chain::default();
    let mut lines = 0;
    for (index, path) in files.iter().enumerate() {
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        for (number, text) in BufReader::new(file).lines().enumerate() {
            let text = text.map_err(io)?;
            let at = At {
                path,
                first_file: index == 0,
                number: number as u64 + 1,
            };
            lines += 1;
            let checked = serde_json::from_str::<Line>(&text)
                .map_err(|e| format!("not an audit record: {e}"))
                .and_then(|line| {
                    chain.check(&line, &at)?;
                    if let Some(checker) = checkpoints.as_mut() {
                        checker.line(&line)?;
                    }
                    chain.advance(&text, &line);
                    Ok(())
                });
            if let Err(why) = checked {
                return Ok(Verification {
                    lines,
                    broken: Some(Broken {
                        file: path.clone(),
                        line: at.number,
                        why,
                    }),
                    head: chain.head(),
                    checkpoints: 0,
                    notes: Vec::new(),
                });
            }
        }
    }
    let mut notes = std::mem::take(&mut chain.notes);
    let mut checked = 0;
    if let Some(checker) = checkpoints {
        let (count, more) = checker.finish();
        checked = count;
        notes.extend(more);
    }
    Ok(Verification {
        lines,
        broken: None,
        head: chain.head(),
        checkpoints: checked,
        notes,
    })
}
