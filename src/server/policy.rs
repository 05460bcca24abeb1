//! Who may use which key with which algorithm: built from the configuration, swapped
//! whole on reload. Deny by default across transports: a rule written for one kind of
//! caller (uids and gids for the Unix socket, `[[clients]]` names for TLS) never opens a
//! key to the other kind.

use std::collections::HashMap;
use std::sync::Arc;

use crate::algorithm::Algorithm;
use crate::config::{KeyConfig, Operation, Purpose, Resolved};

use super::error::ApiError;
use super::peer::{Local, Peer};

/// The access rules in force.
#[derive(Debug, Clone)]
pub struct Policy {
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
    own_uid: u32,
    clients: Vec<Arc<str>>,
    keys: HashMap<String, Arc<KeyRule>>,
    names: Vec<String>,
}

/// The rules for one key.
#[derive(Debug, Clone)]
pub struct KeyRule {
    /// The name callers use.
    pub name: String,
    /// CKA_LABEL on the token.
    pub label: Arc<str>,
    /// Algorithms allowed.
    pub algorithms: Vec<Algorithm>,
    allowed_uids: Option<Vec<u32>>,
    allowed_gids: Option<Vec<u32>>,
    allowed_clients: Option<Vec<Arc<str>>>,
    /// Sign after the certificate expired.
    pub allow_expired: bool,
    /// Signing or decrypting: a key does one.
    pub purpose: Purpose,
    /// The endpoints it serves ([`KeyConfig::allows_operation`]).
    operations: Vec<Operation>,
    /// The audiences its client assertions may name; `None` for any.
    jwt_audiences: Option<Vec<String>>,
}

impl Policy {
    /// Builds the rules from a loaded configuration. While `[[clients]]` is not empty,
    /// each key that serves no TLS client (no `allowed_clients`) gets one warning: with
    /// the deny-by-default rule such a key is local only, which an operator who pinned
    /// clients may not expect.
    pub fn from_config(config: &Resolved) -> Self {
        if !config.config.clients.is_empty() {
            for key in &config.config.keys {
                if key.allowed_clients.as_ref().is_none_or(Vec::is_empty) {
                    tracing::warn!(
                        key = %key.name,
                        "key {:?} serves no TLS client: its rule has no allowed_clients",
                        key.name
                    );
                }
            }
        }
        let server = &config.config.server;
        let keys: HashMap<String, Arc<KeyRule>> = config
            .config
            .keys
            .iter()
            .map(|k| (k.name.clone(), Arc::new(KeyRule::from(k))))
            .collect();
        Self {
            allowed_uids: server.allowed_uids.clone(),
            allowed_gids: server.allowed_gids.clone(),
            own_uid: nix::unistd::geteuid().as_raw(),
            clients: config
                .config
                .clients
                .iter()
                .map(|c| Arc::from(c.name.as_str()))
                .collect(),
            names: config.config.keys.iter().map(|k| k.name.clone()).collect(),
            keys,
        }
    }

    /// `Ok` if `peer` may talk to the daemon at all, else 403 (logged). A local peer: by
    /// `allowed_uids` / `allowed_gids` (empty lists mean only the daemon's own uid). A
    /// TLS client: every client pinned in `[[clients]]` (the handshake already required
    /// its certificate).
    pub fn check_peer(&self, peer: &Peer) -> Result<(), ApiError> {
        if self.admits(peer) {
            Ok(())
        } else {
            tracing::warn!(peer = %peer.describe(), "refused a peer no rule admits");
            Err(refusal(peer))
        }
    }

    /// [`Policy::check_peer`] without the log line or the error: for the listener, which asks
    /// once per connection and logs refusals folded.
    pub fn admits(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Local(l) => self.admits_local(l),
            Peer::Remote(r) => self.clients.iter().any(|c| **c == *r.client),
        }
    }

    fn admits_local(&self, peer: &Local) -> bool {
        if self.allowed_uids.is_empty() && self.allowed_gids.is_empty() {
            peer.uid == self.own_uid
        } else {
            self.allowed_uids.contains(&peer.uid) || self.allowed_gids.contains(&peer.gid)
        }
    }

    /// The rules for the key `name`, if `peer` may use it.
    pub fn key(&self, name: &str, peer: &Peer) -> Result<Arc<KeyRule>, ApiError> {
        let rule = self
            .keys
            .get(name)
            .ok_or_else(|| ApiError::unknown_key(name))?;
        if rule.permits(peer) {
            Ok(rule.clone())
        } else {
            tracing::warn!(
                peer = %peer.describe(),
                key = name,
                "refused a peer not allowed this key"
            );
            Err(ApiError::forbidden(format!(
                "{} may not use key {name:?}",
                peer.describe()
            )))
        }
    }

    /// Every key name `peer` may use, in configuration order.
    pub fn names_for(&self, peer: &Peer) -> Vec<Arc<KeyRule>> {
        self.names
            .iter()
            .filter_map(|n| self.keys.get(n))
            .filter(|rule| rule.permits(peer))
            .cloned()
            .collect()
    }

    /// True when a key named `name` is configured.
    pub fn has_key(&self, name: &str) -> bool {
        self.keys.contains_key(name)
    }

    /// Every key rule, in configuration order.
    pub fn all(&self) -> Vec<Arc<KeyRule>> {
        self.names
            .iter()
            .filter_map(|n| self.keys.get(n))
            .cloned()
            .collect()
    }
}

/// The 403 for a peer no rule admits, naming the settings that would.
pub fn refusal(peer: &Peer) -> ApiError {
    match peer {
        Peer::Local(_) => ApiError::forbidden(format!(
            "{} is not allowed to use this daemon ([server] allowed_uids / allowed_gids)",
            peer.describe()
        )),
        Peer::Remote(_) => ApiError::forbidden(format!(
            "{} is not a known client: its certificate is not pinned in [[clients]]",
            peer.describe()
        )),
    }
}

impl KeyRule {
    /// Refuses (422 `wrong_purpose`) a request for `wanted` with a key meant for the
    /// other job.
    pub fn require(&self, wanted: Purpose) -> Result<(), ApiError> {
        if self.purpose == wanted {
            Ok(())
        } else {
            Err(ApiError::wrong_purpose(&self.name, self.purpose, wanted))
        }
    }

    /// `Ok` if the key serves `operation` (its `operations` list, or without one every
    /// operation of its purpose), else 403 `operation_not_allowed`: `/sign` over a digest
    /// can make any other signature, so a key narrowed to, say, client assertions must
    /// not serve it.
    pub fn require_operation(&self, operation: Operation) -> Result<(), ApiError> {
        if self.operations.contains(&operation) {
            Ok(())
        } else {
            Err(ApiError::operation_not_allowed(&self.name, operation))
        }
    }

    /// `Ok` if a client assertion signed with this key may name `audience`
    /// ([`KeyConfig::allows_audience`]), else 403 `audience_not_allowed`.
    pub fn require_audience(&self, audience: &str) -> Result<(), ApiError> {
        match &self.jwt_audiences {
            Some(list) if !list.iter().any(|a| a == audience) => {
                Err(ApiError::audience_not_allowed(&self.name, audience))
            }
            _ => Ok(()),
        }
    }

    /// Deny by default across transports. A local caller may use a key whose rule names
    /// no principal at all, or whose `allowed_uids` / `allowed_gids` each match it (each
    /// list that is set must match); a key whose rule names only `allowed_clients` serves
    /// no local caller. A TLS client may use a key only if its `allowed_clients` names it.
    fn permits(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Local(l) => {
                let local_rule = self.allowed_uids.is_some() || self.allowed_gids.is_some();
                if !local_rule {
                    return self.allowed_clients.is_none();
                }
                self.allowed_uids
                    .as_ref()
                    .is_none_or(|u| u.contains(&l.uid))
                    && self
                        .allowed_gids
                        .as_ref()
                        .is_none_or(|g| g.contains(&l.gid))
            }
            Peer::Remote(r) => self
                .allowed_clients
                .as_ref()
                .is_some_and(|c| c.iter().any(|name| **name == *r.client)),
        }
    }
}

impl From<&KeyConfig> for KeyRule {
    fn from(k: &KeyConfig) -> Self {
        Self {
            name: k.name.clone(),
            label: Arc::from(k.label.as_str()),
            algorithms: k.algorithms.clone(),
            allowed_uids: k.allowed_uids.clone(),
            allowed_gids: k.allowed_gids.clone(),
            allowed_clients: k
                .allowed_clients
                .as_ref()
                .map(|c| c.iter().map(|n| Arc::from(n.as_str())).collect()),
            allow_expired: k.allow_expired,
            purpose: k.purpose,
            operations: Operation::ALL
                .into_iter()
                .filter(|op| k.allows_operation(*op))
                .collect(),
            jwt_audiences: k.jwt_audiences.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::peer::Remote;

    fn rule(uids: Option<&[u32]>, gids: Option<&[u32]>, clients: Option<&[&str]>) -> KeyRule {
        KeyRule {
            name: "k".into(),
            label: Arc::from("k"),
            algorithms: Vec::new(),
            allowed_uids: uids.map(<[u32]>::to_vec),
            allowed_gids: gids.map(<[u32]>::to_vec),
            allowed_clients: clients.map(|c| c.iter().map(|n| Arc::from(*n)).collect()),
            allow_expired: false,
            purpose: Purpose::Sign,
            operations: vec![Operation::Sign, Operation::Wss, Operation::Saml],
            jwt_audiences: None,
        }
    }

    fn client(name: &str) -> Peer {
        Peer::Remote(Remote {
            client: Arc::from(name),
        })
    }

    /// Local uid × TLS client × each shape of key rule: who may use the key.
    #[test]
    fn the_matrix_of_callers_and_key_rules_denies_across_transports() {
        let www = Peer::local(33, 33);
        let root = Peer::local(0, 0);
        let other_gid = Peer::local(33, 1000);
        let web1 = client("gsko-web1");
        let web2 = client("gsko-web2");
        let callers = [&www, &root, &other_gid, &web1, &web2];
        // One row per rule shape: what each caller above gets.
        let rows: [(&str, KeyRule, [bool; 5]); 9] = [
            (
                "no principal",
                rule(None, None, None),
                [true, true, true, false, false],
            ),
            (
                "uids",
                rule(Some(&[33]), None, None),
                [true, false, true, false, false],
            ),
            (
                "gids",
                rule(None, Some(&[33]), None),
                [true, false, false, false, false],
            ),
            (
                "uids and gids",
                rule(Some(&[33]), Some(&[33]), None),
                [true, false, false, false, false],
            ),
            (
                "clients only",
                rule(None, None, Some(&["gsko-web1"])),
                [false, false, false, true, false],
            ),
            (
                "uids and clients",
                rule(Some(&[0]), None, Some(&["gsko-web1", "gsko-web2"])),
                [false, true, false, true, true],
            ),
            (
                "gids and clients",
                rule(None, Some(&[1000]), Some(&["gsko-web2"])),
                [false, false, true, false, true],
            ),
            ("empty clients", rule(None, None, Some(&[])), [false; 5]),
            ("empty uids", rule(Some(&[]), None, None), [false; 5]),
        ];
        for (shape, rule, expected) in rows {
            for (caller, want) in callers.iter().zip(expected) {
                assert_eq!(rule.permits(caller), want, "{shape}: {}", caller.describe());
            }
        }
    }

    /// An unpinned certificate's `sha256:` name is never in a rule's clients.
    #[test]
    fn a_client_name_must_match_exactly() {
        let only_web1 = rule(None, None, Some(&["gsko-web1"]));
        for name in [
            "gsko-web",
            "gsko-web10",
            "GSKO-WEB1",
            "sha256:0011223344556677",
        ] {
            assert!(!only_web1.permits(&client(name)), "{name}");
        }
    }
}
