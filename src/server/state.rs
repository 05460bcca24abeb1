//! What every handler shares: the signer, the rules and settings in force (swapped whole
//! on reload), the audit log, metrics and health.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::health_report::HealthState;
use super::metrics::Metrics;
use super::policy::Policy;
use super::protection::Protections;
use crate::audit::AuditLog;
use crate::config::Resolved;
use crate::signer::{KeyInfo, KeySigner};

/// Settings that a reload may change.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest body accepted by the JSON endpoints.
    pub max_body_bytes: usize,
    /// Largest body accepted by the XML endpoints.
    pub max_xml_body_bytes: usize,
    /// How long a request may wait for the token.
    pub request_timeout: Duration,
    /// How long a client may take to send its body.
    pub read_timeout: Duration,
    /// Seconds between self-tests.
    pub health_interval: Duration,
    /// Days-left threshold for "warning".
    pub warn_days: i64,
    /// The module and token, to read key protection ([`super::protection`]).
    pub module: std::path::PathBuf,
    /// The token.
    pub selector: crate::token::TokenSelector,
    /// `[server] refuse_extractable_keys`.
    pub refuse_extractable_keys: bool,
    /// `[xml]`: how complex a document the XML endpoints accept.
    pub xml_limits: crate::xml::XmlLimits,
}

impl Settings {
    /// From a loaded configuration.
    pub fn from_config(config: &Resolved) -> Self {
        Self {
            max_body_bytes: config.config.server.max_body_bytes,
            max_xml_body_bytes: config.config.server.max_xml_body_bytes,
            request_timeout: config.request_timeout(),
            read_timeout: config.read_timeout(),
            health_interval: Duration::from_secs(config.config.health.interval_seconds.max(1)),
            warn_days: config.config.health.warn_days,
            module: config.module.clone(),
            selector: config.selector.clone(),
            refuse_extractable_keys: config.config.server.refuse_extractable_keys,
            xml_limits: config.config.xml,
        }
    }
}

/// The handlers' shared state.
pub struct AppState {
    /// The token side.
    pub signer: Arc<dyn KeySigner>,
    /// Where audit records go, if anywhere.
    pub audit: Option<AuditLog>,
    /// The metrics.
    pub metrics: Metrics,
    /// The last self-test.
    pub health: HealthState,
    /// Places for XML requests being read and processed (`[server] max_xml_in_flight`):
    /// bounds the memory that large documents take at once.
    pub xml_places: Arc<tokio::sync::Semaphore>,
    /// The threads that do the XML work, one per request at most.
    pub xml_threads: super::xml_threads::XmlThreads,
    /// Each key as last seen loaded, by label (configured labels only, so bounded).
    known_keys: Mutex<HashMap<String, Arc<KeyInfo>>>,
    policy: RwLock<Arc<Policy>>,
    settings: RwLock<Arc<Settings>>,
    protections: RwLock<Option<Arc<Protections>>>,
}

impl AppState {
    /// Builds the state for `config`.
    pub fn new(
        signer: Arc<dyn KeySigner>,
        audit: Option<AuditLog>,
        metrics: Metrics,
        config: &Resolved,
    ) -> Self {
        let state = Self {
            signer,
            audit,
            metrics,
            health: HealthState::default(),
            xml_places: Arc::new(tokio::sync::Semaphore::new(config.xml_in_flight())),
            xml_threads: Default::default(),
            known_keys: Mutex::default(),
            policy: RwLock::new(Arc::new(Policy::from_config(config))),
            settings: RwLock::new(Arc::new(Settings::from_config(config))),
            protections: RwLock::new(None),
        };
        state.remember_keys(config);
        state
    }

    /// Notes the configured keys loaded now, for [`AppState::last_known_key`].
    fn remember_keys(&self, config: &Resolved) {
        for key in &config.config.keys {
            self.last_known_key(&key.label);
        }
    }

    /// The key labelled `label` as loaded now or, while the token is down, as last seen
    /// loaded: the XML endpoints parse and check a document before the token's state is
    /// looked at, and need the key's type and certificate for that. No token call.
    pub fn last_known_key(&self, label: &str) -> Option<Arc<KeyInfo>> {
        let mut known = self.known_keys.lock().expect("known keys lock");
        match self.signer.key(label) {
            Some(key) => {
                known.insert(label.to_owned(), key.clone());
                Some(key)
            }
            None => known.get(label).cloned(),
        }
    }

    /// CKA_EXTRACTABLE and CKA_SENSITIVE of the configured keys, when read.
    pub fn protections(&self) -> Option<Arc<Protections>> {
        self.protections.read().expect("protections lock").clone()
    }

    /// Records what [`super::protection::inspect`] read.
    pub fn set_protections(&self, found: Protections) {
        *self.protections.write().expect("protections lock") = Some(Arc::new(found));
    }

    /// The rules in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock").clone()
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().expect("settings lock").clone()
    }

    /// Puts a reloaded configuration in force; requests already running keep the old one.
    pub fn apply(&self, config: &Resolved) {
        *self.policy.write().expect("policy lock") = Arc::new(Policy::from_config(config));
        *self.settings.write().expect("settings lock") = Arc::new(Settings::from_config(config));
        self.remember_keys(config);
    }
}
