//! Health: a real operation with every configured key, not a ping: a signing key makes a
//! test signature, verified in software against its certificate; a decrypt key derives
//! an ECDH secret that is compared with the one computed in software. The report adds the
//! token's and the audit log's state, the keys' protection and the certificates' days
//! left. It runs on a timer and whenever asked; a report is reused for up to a second
//! while the token's and the audit log's state stay the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::error::ApiError;
use super::health_report::{KeyHealth, Report};
use super::metrics::KeyLabel;
use super::peer::Peer;
use super::state::AppState;
use crate::algorithm::verify_digest;
use crate::audit::{AuditState, OnFailure};
use crate::cert::CertInfo;
use crate::config::Purpose;
use crate::signer::{KeyInfo, Status};
use zeroize::Zeroizing;

use super::policy::KeyRule;
use super::protection::Protections;

/// How fresh a report must be to be served without a new check.
const FRESH: Duration = Duration::from_secs(1);

/// A report at most a second old, checking now if needed.
pub async fn current(state: &AppState) -> Arc<Report> {
    let mut last = state.health.last.lock().await;
    if let Some((at, report)) = &*last {
        // A report is reused only while fresh and while the token's state is unchanged,
        // so the first look after a reconnect sees it.
        let audit_now = state
            .audit
            .as_ref()
            .map(|a| a.state())
            .unwrap_or(AuditState::Ok);
        if at.elapsed() < FRESH
            && report.token_state == state.signer.status()
            && report.audit == audit_now
        {
            return report.clone();
        }
    }
    let report = Arc::new(check(state).await);
    state
        .metrics
        .healthy
        .set(i64::from(report.status != "unavailable"));
    *last = Some((Instant::now(), report.clone()));
    report
}

async fn check(state: &AppState) -> Report {
    let audit = match state.audit.clone() {
        None => AuditState::Ok,
        Some(log) => {
            if matches!(log.state(), AuditState::Failing { .. }) {
                let probing = log.clone();
                let probe = tokio::task::spawn_blocking(move || probing.probe());
                let _ = tokio::time::timeout(crate::audit::STALLED_AFTER, probe).await;
            }
            log.state()
        }
    };
    let audit_refuses = audit != AuditState::Ok
        && state
            .audit
            .as_ref()
            .is_some_and(|log| log.on_failure() == OnFailure::Refuse);
    let token_state = state.signer.status();
    let settings = state.settings();
    let protections = protections(state, &token_state).await;
    let mut reasons = Vec::new();
    let mut leaving = Vec::new();
    let mut keys = Vec::new();
    for rule in state.policy().all() {
        let key = state.signer.key(&rule.label);
        let info = key.as_ref().and_then(|k| CertInfo::of(&k.cert).ok());
        let mut health = KeyHealth {
            name: rule.name.clone(),
            purpose: rule.purpose,
            signs: false,
            derives: (rule.purpose == Purpose::Decrypt).then_some(false),
            error: None,
            days_left: info.as_ref().map(|i| i.days_left),
            not_after: info.as_ref().map(|i| i.not_after.clone()),
            latency_ms: None,
            protection: protections
                .as_ref()
                .and_then(|p| p.get(rule.label.as_ref()).copied()),
        };
        if let Some(p) = health.protection.filter(|p| p.can_leave()) {
            leaving.push(format!(
                "key {:?}: {}: the key could leave the token",
                rule.name,
                p.problems()
            ));
        }
        if let Some(days) = health.days_left {
            state
                .metrics
                .cert_days_left
                .get_or_create(&KeyLabel {
                    key: rule.name.clone(),
                })
                .set(days);
        }
        match &key {
            None => {
                health.error = Some(match state.signer.key_problem(&rule.label) {
                    Some(reason) => format!("key not usable: {reason}"),
                    None => "key not loaded from the token".into(),
                })
            }
            Some(k) => match rule.purpose {
                Purpose::Sign => sign_test(state, &rule, k, &mut health).await,
                Purpose::Decrypt => derive_test(state, &rule, k, &mut health).await,
            },
        }
        if let Some(error) = &health.error {
            reasons.push(format!("key {:?}: {error}", rule.name));
        } else if let Some(days) = health.days_left {
            if days < 0 && !rule.allow_expired && rule.purpose == Purpose::Sign {
                reasons.push(format!(
                    "key {:?}: certificate expired {} days ago",
                    rule.name, -days
                ));
                health.signs = false;
            }
        }
        keys.push(health);
    }
    match &token_state {
        Status::Up => {}
        Status::Down { reason, .. } => reasons.insert(0, format!("token unavailable: {reason}")),
        Status::PinProblem { reason } => {
            reasons.insert(0, format!("token refused the PIN: {reason}"))
        }
        Status::Stopping => reasons.insert(0, "shutting down".into()),
    }
    match &audit {
        AuditState::Ok => {}
        AuditState::Failing { error, refused } => reasons.insert(
            0,
            format!(
                "audit log cannot be written ({error}); {refused} requests refused or unrecorded"
            ),
        ),
        AuditState::Stalled { for_ms } => {
            reasons.insert(0, format!("audit log write stuck for {for_ms} ms"))
        }
    }
    let failing = token_state != Status::Up || keys.iter().any(|k| !k.passed()) || audit_refuses;
    let expiring: Vec<String> = keys
        .iter()
        .filter(|k| {
            k.days_left
                .is_some_and(|d| (0..settings.warn_days).contains(&d))
        })
        .map(|k| {
            format!(
                "key {:?}: certificate expires in {} days",
                k.name,
                k.days_left.unwrap_or(0)
            )
        })
        .collect();
    let status = if failing {
        "unavailable"
    } else if !expiring.is_empty() || !leaving.is_empty() || audit != AuditState::Ok {
        "warning"
    } else {
        "ok"
    };
    reasons.extend(expiring);
    reasons.extend(leaving);
    Report {
        status,
        reasons,
        token: state.signer.token_label(),
        token_state,
        audit,
        keys,
        checked_at: crate::audit::now_rfc3339(),
    }
}

/// The configured keys' protection: as read at start or reload, or read now for keys it
/// could not be read for then (the token was down, the key not there yet) if the token
/// is up now.
async fn protections(state: &AppState, token_state: &Status) -> Option<Arc<Protections>> {
    let labels: Vec<String> = state
        .policy()
        .all()
        .iter()
        .map(|r| r.label.to_string())
        .collect();
    let known = state.protections();
    if let Some(found) = &known {
        if labels.iter().all(|l| found.contains_key(l)) {
            return known;
        }
    }
    if *token_state != Status::Up {
        return known;
    }
    let settings = state.settings();
    let read = tokio::task::spawn_blocking(move || {
        super::protection::inspect(&settings.module, &settings.selector, &labels)
    });
    match tokio::time::timeout(state.settings().request_timeout, read).await {
        Ok(Ok(Ok(found))) => {
            state.set_protections(found);
            state.protections()
        }
        Ok(Ok(Err(e))) => {
            tracing::debug!(error = %e, "cannot read the keys' CKA_EXTRACTABLE yet");
            known
        }
        _ => known,
    }
}

/// A sign key's self-test: a signature over a random challenge, verified against the
/// certificate in software.
async fn sign_test(state: &AppState, rule: &KeyRule, key: &KeyInfo, health: &mut KeyHealth) {
    // The loader refuses algorithms that do not fit the key, so one fits.
    let Some(alg) = rule.algorithms.iter().copied().find(|a| a.fits(key.kind)) else {
        return;
    };
    let mut challenge = [0u8; 32];
    openssl::rand::rand_bytes(&mut challenge).expect("OpenSSL's RNG works");
    let digest = alg.hash().digest(&challenge);
    let started = Instant::now();
    let timeout = state.settings().request_timeout;
    match state
        .signer
        .sign(rule.label.clone(), alg, digest.clone(), timeout)
        .await
    {
        Ok(signed) => {
            health.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            let verified = signed
                .key
                .cert
                .public_key()
                .and_then(|pk| verify_digest(&pk, alg, &digest, &signed.signature))
                .unwrap_or(false);
            health.signs = verified;
            if !verified {
                health.error =
                    Some("the test signature does not verify against the certificate".into());
            }
        }
        Err(e) => health.error = Some(e.to_string()),
    }
}

/// A decrypt key's self-test: a fresh software P-256 key, Z derived on the token from
/// its point, compared with Z computed in software against the key's certificate.
async fn derive_test(state: &AppState, rule: &KeyRule, key: &KeyInfo, health: &mut KeyHealth) {
    let Ok((point, expected)) = software_ecdh(key) else {
        health.error = Some("cannot run ECDH in software against the certificate's key".into());
        return;
    };
    let label = rule.label.clone();
    let started = Instant::now();
    let timeout = state.settings().request_timeout;
    let derived = state
        .signer
        .run(timeout, move |signer| {
            signer
                .derive_now(&label, &point)
                .map(|(z, _)| z == expected)
        })
        .await;
    match derived {
        Ok(Ok(same)) => {
            health.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            health.derives = Some(same);
            if !same {
                health.error = Some(
                    "the token's ECDH secret differs from the one computed against the certificate (wrong key beside the certificate?)".into(),
                );
            }
        }
        Ok(Err(e)) | Err(e) => health.error = Some(e.to_string()),
    }
}

/// An ephemeral key's uncompressed point and Z = ECDH(ephemeral, certificate's key).
fn software_ecdh(
    key: &KeyInfo,
) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), openssl::error::ErrorStack> {
    use openssl::ec::{EcGroup, EcKey, PointConversionForm};
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
    let ephemeral = EcKey::generate(&group)?;
    let mut ctx = openssl::bn::BigNumContext::new()?;
    let point =
        ephemeral
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)?;
    let ephemeral = openssl::pkey::PKey::from_ec_key(ephemeral)?;
    let peer = key.cert.public_key()?;
    let mut deriver = openssl::derive::Deriver::new(&ephemeral)?;
    deriver.set_peer(&peer)?;
    Ok((point, Zeroizing::new(deriver.derive_to_vec()?)))
}

/// `GET /v1/health`: 200 when every key signs (status "ok" or "warning"), else 503.
pub async fn handler(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    state.policy().check_peer(&peer)?;
    let report = current(&state).await;
    let status = if report.status == "unavailable" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(report.as_ref().clone())).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, 5.into());
    }
    Ok(response)
}

/// Runs the self-test every `health_interval`, so the token's loss is noticed (and the
/// reconnect started) even when no one is signing.
/// The first check runs at once, so `hsm_signer_healthy` and the days-left gauges are
/// right from the start.
pub async fn run_periodic(state: Arc<AppState>) {
    loop {
        let report = current(&state).await;
        if report.status != "ok" {
            tracing::warn!(status = report.status, reasons = ?report.reasons, "health check");
        }
        let interval = state.settings().health_interval;
        tokio::time::sleep(interval).await;
    }
}
