//! `hsm-signer check`: certificate expiry in the monitoring-plugin convention (Nagios,
//! Icinga, Zabbix, cron): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with one summary
//! line first and performance data after `|`.

use crate::cert::CertInfo;

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
    for (name, cert) in certificates {
        if label.is_some_and(|l| l != name) {
            continue;
        }
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
            cert.subject
        ));
        perf.push(format!("'days_left_{name}'={days};{warn_days};{crit_days}"));
    }
    if details.is_empty() {
        worst = State::Unknown;
        details.push(match label {
            Some(l) => format!("UNKNOWN: no certificate labelled \"{l}\" on the token"),
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
        .iter()
        .find(|d| d.starts_with(worst.word()))
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
