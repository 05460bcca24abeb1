//! The integration tests: one binary, a module per feature. Each module runs the real
//! `hsm-signer` binary or library against real tokens; `common` gives every test a freshly
//! initialised token of its own, so tests run in parallel (cargo-nextest runs each test
//! in a process of its own).
//!
//! Where a new test goes:
//!
//! - **Import and keys on the token**: `import` (`.p12` files from real writers),
//!   `import_faults` (bad input and token faults), `import_inputs` (FIFOs, untrusted
//!   files), `import_stdin`, `import_unwrap` (`--method unwrap`), `import_cert`
//!   (renewed certificates), `import_argv` (no secret in argv), `record` (`--record`),
//!   `generate` (keys born on the token), `ksef` (`generate --subject-json`), `list`,
//!   `change_pin`, `pin`, `softhsm_owner`, `expiry` (`check`).
//! - **Token families and modules**: `families` (the core on SoftHSM, kryoptic, the TPM),
//!   `tpm`, `module_messages`, `crash` (a module that crashes), `smoke` (the helper).
//! - **The daemon**: `daemon_smoke`, `daemon` (endpoints, algorithms, bad requests),
//!   `daemon_security` (access rules, peers), `handlers` (the router without a socket),
//!   `hardening` (labels, rules, reload), `hardening_conn` (connection attacks), `tls`
//!   (mutual TLS; `tls/flood.rs`, `tls/identity.rs`), `audit` (fail closed),
//!   `no_session_per_request`, `soak` (load, bounded), `renewal`, `scale_out`.
//! - **Token faults under the daemon**: `key_faults`, `outage` (network HSM through
//!   p11-kit), `token_gone`.
//! - **Message formats**: `xml_sign` (the library, software keys), `xml_daemon` (WS-Security
//!   and SAML through the daemon), `wk_decrypt` (login.gov.pl assertions), `jose` (JWS,
//!   client assertions, JWK), `jose_daemon` (the JOSE endpoints through the socket, the
//!   e-Doręczenia examples), `xades` (XAdES-BES), `xades_daemon` (XAdES through the
//!   daemon, `sign-xml --profile xades`, the KSeF examples).
//! - **Docs and examples, run as a reader would**: `docs` (every ```console block),
//!   `api_doc`, `doc_messages` (error tables), `doc_units` (systemd units), `examples`
//!   (PHP, Python, Java), `monitoring`, `no_systemd`.
//! - **The source itself**: `module_circles` (no import circles in src/).

#[macro_use]
mod common;

mod api_doc;
mod audit;
mod change_pin;
mod crash;
mod daemon;
mod daemon_security;
mod daemon_smoke;
mod doc_messages;
mod doc_units;
mod docs;
mod examples;
mod expiry;
mod families;
mod generate;
mod handlers;
mod hardening;
mod hardening_conn;
mod import;
mod import_argv;
mod import_cert;
mod import_faults;
mod import_inputs;
mod import_stdin;
mod import_unwrap;
mod jose;
mod jose_daemon;
mod key_faults;
mod ksef;
mod list;
mod module_circles;
mod module_messages;
mod monitoring;
mod no_session_per_request;
mod no_systemd;
mod outage;
mod pin;
mod record;
mod renewal;
mod scale_out;
mod smoke;
mod soak;
mod softhsm_owner;
mod tls;
mod token_gone;
mod tpm;
mod wk_decrypt;
mod xades;
mod xades_daemon;
mod xml_daemon;
mod xml_sign;
