//! Signed checkpoints: every `[audit] checkpoint_interval_s` and at shutdown, the daemon
//! signs the chain's head with an EC key on the token that no caller can use
//! (`[audit] checkpoint_key_label`, refused as a `[[keys]]` label). Someone who edits a
//! line and recomputes every `prev` after it cannot make the next checkpoint's signature,
//! so `audit verify --certificate` reports the rewrite.
//!
//! What this does not protect: whoever has the token's PIN can sign checkpoints too, and
//! lines cut after the last checkpoint show only against a head exported elsewhere (the
//! daemon logs each checkpoint's head to the journal).

use std::time::Duration;

use base64::Engine;
use openssl::pkey::{PKey, Public};
use time::OffsetDateTime;

use super::record::{Line, Record};
use crate::algorithm::{self, Algorithm};

/// The bytes a checkpoint signs: the checkpoint line's own `seq` and `time`, and its
/// `prev`, which is the hash of every line before it through the chain.
pub fn message(seq: u64, time: &str, prev: &str) -> Vec<u8> {
    format!("hsm-signer audit checkpoint v1\nseq {seq}\ntime {time}\nprev {prev}\n").into_bytes()
}

/// The algorithm checkpoints use (the key is EC P-256 on the token).
pub const ALGORITHM: Algorithm = Algorithm::Es256;

/// Builds a checkpoint record for the line `seq`, whose `prev` is `prev`; `sign` makes
/// the ES256 signature (raw r||s) over the message's SHA-256.
pub fn record<E>(
    seq: u64,
    prev: &str,
    label: &str,
    interval: Duration,
    reason: &str,
    sign: impl FnOnce(&[u8]) -> Result<(Vec<u8>, String), E>,
) -> Result<Record, E> {
    let mut record = Record::system("checkpoint", "ok");
    let digest = ALGORITHM.hash().digest(&message(seq, &record.time, prev));
    let (signature, cert_sha256) = sign(&digest)?;
    record.key = label.into();
    record.algorithm = ALGORITHM.name().into();
    record.cert_sha256 = Some(cert_sha256);
    record.detail = Some(serde_json::json!({
        "signature": base64::engine::general_purpose::STANDARD.encode(signature),
        "interval_s": interval.as_secs(),
        "reason": reason,
    }));
    Ok(record)
}

/// Checks checkpoints while `audit verify` walks the chain.
pub struct Checker {
    key: PKey<Public>,
    count: u64,
    /// Seq and time of the line after the last good checkpoint (or the first line).
    stretch_start: Option<(u64, OffsetDateTime)>,
    last_time: Option<OffsetDateTime>,
    last_seq: u64,
    interval: Option<Duration>,
    gaps: Vec<String>,
}

impl Checker {
    /// Checks against the public key of the checkpoint key's certificate.
    pub fn new(key: PKey<Public>) -> Self {
        Self {
            key,
            count: 0,
            stretch_start: None,
            last_time: None,
            last_seq: 0,
            interval: None,
            gaps: Vec::new(),
        }
    }

    /// Takes the next line; `Err` when a checkpoint does not verify.
    pub fn line(&mut self, line: &Line) -> Result<(), String> {
        let time = parse_time(&line.record.time);
        if self.stretch_start.is_none() {
            self.stretch_start = time.map(|t| (line.seq, t));
        }
        if let Some(t) = time {
            self.last_time = Some(t);
        }
        self.last_seq = line.seq;
        if line.record.op == "log_opened" {
            // A restart: the stretch before it ended with the shutdown checkpoint (or
            // a crash, which the gap check below shows as an unsigned stretch).
            return Ok(());
        }
        if line.record.op != "checkpoint" {
            return Ok(());
        }
        let (start_seq, start_time) = self
            .stretch_start
            .unwrap_or((line.seq, OffsetDateTime::UNIX_EPOCH));
        let signature = line
            .record
            .detail
            .as_ref()
            .and_then(|d| d.get("signature"))
            .and_then(|s| s.as_str())
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default();
        let digest = ALGORITHM
            .hash()
            .digest(&message(line.seq, &line.record.time, &line.prev));
        let verified =
            algorithm::verify_digest(&self.key, ALGORITHM, &digest, &signature).unwrap_or(false);
        if !verified {
            return Err(format!(
                "the checkpoint at seq {} does not verify against the certificate: lines {}..{} were rewritten or the checkpoint was forged",
                line.seq, start_seq, line.seq
            ));
        }
        if let Some(interval) = line
            .record
            .detail
            .as_ref()
            .and_then(|d| d.get("interval_s"))
            .and_then(|s| s.as_u64())
        {
            self.interval = Some(Duration::from_secs(interval.max(1)));
        }
        if let (Some(t), Some(interval)) = (time, self.interval) {
            self.flag_gap(start_seq, start_time, line.seq, t, interval);
        }
        self.count += 1;
        self.stretch_start = time.map(|t| (line.seq + 1, t));
        Ok(())
    }

    fn flag_gap(
        &mut self,
        from_seq: u64,
        from: OffsetDateTime,
        to_seq: u64,
        to: OffsetDateTime,
        interval: Duration,
    ) {
        let span = to - from;
        if span > time::Duration::try_from(interval * 2).unwrap_or(time::Duration::MAX) {
            self.gaps.push(format!(
                "GAP: {} s without a checkpoint between seq {from_seq} and seq {to_seq} (interval {} s): checkpoints may have been removed",
                span.whole_seconds(),
                interval.as_secs()
            ));
        }
    }

    /// The number of checkpoints verified, and the notes: gaps, and the unsigned tail.
    pub fn finish(mut self) -> (u64, Vec<String>) {
        if let (Some((start_seq, start)), Some(end)) = (self.stretch_start, self.last_time) {
            if start_seq <= self.last_seq {
                if self.count == 0 {
                    self.gaps.push(format!(
                        "GAP: no checkpoint at all in seq {start_seq}..{}: nothing in this log is signed",
                        self.last_seq
                    ));
                } else {
                    let unsigned = self.last_seq - start_seq + 1;
                    if let Some(interval) = self.interval {
                        self.flag_gap(start_seq, start, self.last_seq, end, interval);
                    }
                    self.gaps.push(format!(
                        "note: the last {unsigned} lines (seq {start_seq}..{}) come after the last checkpoint; compare the head with the one exported to the journal",
                        self.last_seq
                    ));
                }
            }
        }
        (self.count, self.gaps)
    }
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// True when a note from [`Checker::finish`] marks a problem rather than information.
pub fn is_gap(note: &str) -> bool {
    note.starts_with("GAP:")
}
