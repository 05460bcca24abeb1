//! The audit record format (version 2, documented in docs/security.md). Version 1 lines,
//! written before the format had `v` and `op`, read as `op = "sign"`.

use serde::{Deserialize, Serialize};

/// The format written now.
pub const FORMAT_VERSION: u32 = 2;

/// Who asked: a local process (SO_PEERCRED) or a TLS client (its `[[clients]]` name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Caller {
    /// Peer uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Peer primary gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Peer pid, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The client's certificate name, for a TLS caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// One record. Requests fill `key` … `cert_sha256`; the daemon's own records
/// (`log_opened`, `audit_outage`, `checkpoint`, `refused_peer`) carry `detail`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// What: `sign`, `wss`, `saml`, `decrypt`, or one of the daemon's own records.
    #[serde(default = "op_sign")]
    pub op: String,
    /// Who asked (absent on the daemon's own records).
    #[serde(flatten)]
    pub caller: Caller,
    /// The key name asked for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// The algorithm asked for, as resolved (or as given, escaped, when unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm: String,
    /// SHA-256 of what was signed or decrypted, hex: the data or digest sent to `/sign`,
    /// the canonical SignedInfo for XML.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub input_sha256: String,
    /// What the signature refers to, e.g. an XML reference URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// "ok" or the error code.
    pub outcome: String,
    /// The HTTP status (0 on the daemon's own records).
    #[serde(default)]
    pub status: u16,
    /// Time spent, microseconds.
    #[serde(default)]
    pub duration_us: u64,
    /// SHA-256 of the certificate of the key that signed, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// JWS and client assertions: SHA-256 of the protected header's text, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_sha256: Option<String>,
    /// Client assertions: `aud`, escaped and cut to 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Client assertions: `iss` (and `sub`), escaped and cut to 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Client assertions: `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The daemon's own records: what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// Now, as RFC 3339 UTC with milliseconds (the records' `time`).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

fn op_sign() -> String {
    "sign".into()
}

impl Record {
    /// A record of the daemon's own, stamped now.
    pub fn system(op: &str, outcome: &str) -> Self {
        Self {
            time: now_rfc3339(),
            op: op.into(),
            caller: Caller::default(),
            key: String::new(),
            algorithm: String::new(),
            input_sha256: String::new(),
            reference: None,
            outcome: outcome.into(),
            status: 0,
            duration_us: 0,
            cert_sha256: None,
            header_sha256: None,
            aud: None,
            iss: None,
            jti: None,
            detail: None,
        }
    }

    /// With `detail`.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// A record with its place in the chain: what is written as one line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    /// The format version (1 when absent).
    #[serde(default = "v1")]
    pub v: u32,
    /// The line's number in the chain, from 1.
    pub seq: u64,
    /// The record.
    #[serde(flatten)]
    pub record: Record,
    /// SHA-256 of the line before, hex.
    pub prev: String,
}

/// [`Line`] as written, borrowing the record and the previous hash (same fields, same
/// order, so the same bytes).
#[derive(Serialize)]
pub(super) struct LineRef<'a> {
    pub(super) v: u32,
    pub(super) seq: u64,
    #[serde(flatten)]
    pub(super) record: &'a Record,
    pub(super) prev: &'a str,
}

fn v1() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_line_reads_as_a_sign_record() {
        let old = r#"{"seq":1,"time":"2026-11-25T17:03:44.000Z","uid":33,"gid":33,"pid":1234,"key":"epuap","algorithm":"RS256","input_sha256":"ab","outcome":"ok","status":200,"duration_us":700,"cert_sha256":"cd","prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        let line: Line = serde_json::from_str(old).unwrap();
        assert_eq!(line.v, 1);
        assert_eq!(line.record.op, "sign");
        assert_eq!(line.record.caller.uid, Some(33));
        assert_eq!(line.record.key, "epuap");
    }

    #[test]
    fn a_system_record_has_no_caller_fields() {
        let line = Line {
            v: FORMAT_VERSION,
            seq: 7,
            record: Record::system("log_opened", "ok"),
            prev: "x".into(),
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains("\"uid\""), "{text}");
        assert!(text.contains("\"v\":2"), "{text}");
        let back: Line = serde_json::from_str(&text).unwrap();
        assert_eq!(back.record.op, "log_opened");
    }

    #[test]
    fn a_borrowed_line_serialises_to_the_same_bytes() {
        let mut record = Record::system("sign", "ok");
        record.caller.uid = Some(33);
        record.key = "epuap".into();
        record.cert_sha256 = Some("cd".into());
        let owned = Line {
            v: FORMAT_VERSION,
            seq: 9,
            record: record.clone(),
            prev: "ab".repeat(32),
        };
        let prev = "ab".repeat(32);
        let borrowed = LineRef {
            v: FORMAT_VERSION,
            seq: 9,
            record: &record,
            prev: &prev,
        };
        assert_eq!(
            serde_json::to_string(&owned).unwrap(),
            serde_json::to_string(&borrowed).unwrap()
        );
    }
}
