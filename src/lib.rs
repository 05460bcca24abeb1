//! hsm-signer keeps the ePUAP / Profil Zaufany integration key of a Polish municipality's
//! online office (GSKO / e-Urząd) in a PKCS#11 token and signs for GSKO on request.
//!
//! The data's path through the crate:
//! - import: [`secret`] → [`p12`] → [`cert`] → [`token`] → [`import`];
//! - inventory of what is on a token: [`inventory`];
//! - the command line that drives them: [`cli`].

pub mod algorithm;
pub mod audit;
pub mod bench;
pub mod cert;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod generate;
pub mod hardening;
pub mod import;
pub mod inventory;
pub mod jose;
pub mod outfile;
pub mod p12;
pub mod proof;
pub mod record;
pub mod report;
pub mod secret;
pub mod server;
pub mod signer;
pub mod text;
pub mod token;
pub mod xml;
