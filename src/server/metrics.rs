//! Prometheus metrics: requests by key, algorithm and outcome, latency, token errors,
//! requests in flight, token state and certificate days left.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::signer::TokenCounters;

/// Labels of a signing request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Key name.
    pub key: String,
    /// Algorithm.
    pub algorithm: String,
    /// "ok" or the error code.
    pub outcome: String,
}

/// Labels naming a key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabel {
    /// Key name.
    pub key: String,
}

/// Labels of a token error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// The error code given to callers.
    pub code: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Signing requests.
    pub requests: Family<RequestLabels, Counter>,
    /// Signing latency in seconds, by key.
    pub latency: Family<KeyLabel, Histogram>,
    /// Token-side failures, by code.
    pub token_errors: Family<ErrorLabel, Counter>,
    /// Signing requests in flight.
    pub in_flight: Gauge,
    /// 1 when the token is up and every key passed its last self-test.
    pub healthy: Gauge,
    /// Days until each key's certificate expires.
    pub cert_days_left: Family<KeyLabel, Gauge<i64, AtomicI64>>,
    /// PKCS#11 sessions opened and logins made: constant under load, by design.
    pub token_calls: TokenCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hsm_signer");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "sign_requests",
            "Signing requests by key, algorithm and outcome",
            requests.clone(),
        );
        let latency = Family::<KeyLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        });
        registry.register(
            "sign_duration_seconds",
            "Time from request to signature",
            latency.clone(),
        );
        let token_errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "token_errors",
            "Requests the token side could not serve, by code",
            token_errors.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "sign_in_flight",
            "Signing requests being served",
            in_flight.clone(),
        );
        let healthy = Gauge::default();
        registry.register(
            "healthy",
            "1 when the token is up and every key signed in its last self-test",
            healthy.clone(),
        );
        let cert_days_left = Family::<KeyLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "certificate_days_left",
            "Days until the key's certificate expires",
            cert_days_left.clone(),
        );
        let token_calls = TokenCounters::default();
        registry.register(
            "token_sessions_opened",
            "PKCS#11 sessions opened (C_OpenSession); does not grow with requests",
            token_calls.sessions_opened.clone(),
        );
        registry.register(
            "token_logins",
            "PKCS#11 logins (C_Login); one per connection to the token",
            token_calls.logins.clone(),
        );
        Self {
            token_calls,
            registry,
            requests,
            latency,
            token_errors,
            in_flight,
            healthy,
            cert_days_left,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
