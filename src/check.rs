//! `hsm-signer check`: certificate expiry in the monitoring-plugin convention (Nagios,
//! Icinga, Zabbix, cron): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with one summary
//! line first and performance data after `|`.

use crate::cert::CertInfo;
use crate::text::{printable, WHOLE};

/// A monitoring state, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Nothing to do.
    Ok = 0,
    /// A certificate expires within the warning window.
    Warning = 1,
    /// A certificate expires within the critical window, or has expired.
    Critical = 2,
    /// The check itself could not be made.
    Unknown = 3,
}

impl State {
    /// The word monitoring systems expect.
    pub fn word(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The worst state found.
    pub state: State,
    /// The lines to print: a summary first, then one line per key.
    pub lines: Vec<String>,
}

/// Judges every certificate (or only the one labelled `label`) against the thresholds
/// in days.
pub fn judge(
    certificates: &[(String, CertInfo)],
    label: Option<&str>,
    warn_days: i64,
    crit_days: i64,
) -> Outcome {
    let mut worst = State::Ok;
    let mut details = Vec::new();
    let mut perf = Vec::new();
    // The certificate that ends first comes first: it decides the state, and the summary
    // line names it (a CA certificate valid ten years must not hide the key's two).
    let mut ordered: Vec<&(String, CertInfo)> = certificates
        .iter()
        .filter(|(name, _)| label.is_none_or(|l| l == name))
        .collect();
    ordered.sort_by_key(|(_, cert)| cert.days_left);
    for (name, cert) in ordered {
        // One line per certificate, whatever its label or subject holds.
        let name = printable(name, WHOLE);
        let days = cert.days_left;
        let state = if days < crit_days {
            State::Critical
        } else if days < warn_days {
            State::Warning
        } else {
            State::Ok
        };
        worst = worst.max(state);
        details.push(format!(
            "{}: {name}: {days} days left (until {}), {}",
            state.word(),
            cert.not_after,
            printable(&cert.subject, WHOLE)
        ));
        perf.push(format!("'days_left_{name}'={days};{warn_days};{crit_days}"));
    }
    if details.is_empty() {
        worst = State::Unknown;
        details.push(match label {
            Some(l) => format!(
                "UNKNOWN: no certificate labelled \"{}\" on the token",
                printable(l, WHOLE)
            ),
            None => "UNKNOWN: no certificates on the token".into(),
        });
    }
    let summary = summary_line(worst, &details, &perf);
    let mut lines = vec![summary];
    lines.extend(details);
    Outcome {
        state: worst,
        lines,
    }
}

fn summary_line(worst: State, details: &[String], perf: &[String]) -> String {
    let headline = details
        .first()
        .map(|d| {
            d.split_once(": ")
                .map(|(_, rest)| rest)
                .unwrap_or(d)
                .to_string()
        })
        .unwrap_or_default();
    let more = if details.len() > 1 {
        format!(" (+{} more)", details.len() - 1)
    } else {
        String::new()
    };
    format!("{} - {headline}{more} | {}", worst.word(), perf.join(" "))
        .trim_end_matches(" | ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::KeyKind;

    fn cert(subject: &str, days_left: i64) -> CertInfo {
        CertInfo {
            subject: subject.into(),
            issuer: "CN=Sigillum Test CA".into(),
            serial: "01".into(),
            not_before: "2026-11-25T00:00:00Z".into(),
            not_after: "2028-11-24T00:00:00Z".into(),
            days_left,
            sha256: String::new(),
            key: KeyKind::Rsa { bits: 2048 },
            not_after_unix: 0,
        }
    }

    #[test]
    fn the_summary_names_the_certificate_that_ends_first_not_the_ca() {
        let found = vec![
            ("sigillum-ca".to_string(), cert("CN=Sigillum Test CA", 3649)),
            (
                "gsko-epuap".to_string(),
                cert("CN=gsko.przykladowo.pl", 729),
            ),
        ];
        let outcome = judge(&found, None, 30, 7);
        assert_eq!(outcome.state, State::Ok);
        assert!(
            outcome.lines[0].starts_with("OK - gsko-epuap: 729 days left"),
            "{}",
            outcome.lines[0]
        );
        // Perfdata for every certificate.
        assert!(outcome.lines[0].contains("'days_left_gsko-epuap'=729;30;7"));
        assert!(outcome.lines[0].contains("'days_left_sigillum-ca'=3649;30;7"));
        let soon = vec![
            ("gsko-epuap".to_string(), cert("CN=gsko.przykladowo.pl", 20)),
            ("sigillum-ca".to_string(), cert("CN=Sigillum Test CA", 5)),
        ];
        let outcome = judge(&soon, None, 30, 7);
        assert_eq!(outcome.state, State::Critical);
        assert!(
            outcome.lines[0].starts_with("CRITICAL - sigillum-ca: 5 days left"),
            "{}",
            outcome.lines[0]
        );
    }
}
