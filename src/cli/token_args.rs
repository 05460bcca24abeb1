//! The token options every token command shares, and their resolution.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::secret::{SecretSource, PIN_ENV};
use crate::token::{discover_modules, OpenToken, TokenSelector};

/// Which module and token.
#[derive(Debug, Args)]
pub struct TokenSelectArgs {
    /// The PKCS#11 module (.so) [e.g. /usr/lib/softhsm/libsofthsm2.so].
    #[arg(long, env = "HSM_SIGNER_MODULE")]
    module: Option<PathBuf>,
    /// Token label, or an RFC 7512 URI such as "pkcs11:token=GSKO" or
    /// "pkcs11:serial=1a2b?module-path=/usr/lib/softhsm/libsofthsm2.so".
    #[arg(long, env = "HSM_SIGNER_TOKEN")]
    token: String,
}

impl TokenSelectArgs {
    /// The module to load and the token selector.
    pub fn resolve(&self) -> Result<(PathBuf, TokenSelector)> {
        let selector = TokenSelector::parse(&self.token)?;
        let module = match (&self.module, &selector.module_path) {
            (Some(m), _) | (None, Some(m)) => m.clone(),
            (None, None) => bail!("{}", no_module_message()),
        };
        Ok((module, selector))
    }
}

/// Which module and token, and where the PIN comes from.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Module and token.
    #[command(flatten)]
    select: TokenSelectArgs,
    /// File holding the user PIN (else the URI's pin-source, HSM_SIGNER_PIN, a prompt).
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// Log in even though the token says the next wrong PIN locks it.
    #[arg(long)]
    pin_final_try: bool,
}

/// Token options resolved: nothing below reads flags or the environment again.
#[derive(Debug, Clone)]
pub struct TokenTarget {
    /// The module to load.
    pub module: PathBuf,
    /// The token.
    pub selector: TokenSelector,
    /// Where the PIN comes from.
    pub pin: SecretSource,
    /// Accept the final-try risk.
    pub allow_final_try: bool,
}

impl TokenArgs {
    /// The module and token, without the PIN.
    pub fn select(&self) -> &TokenSelectArgs {
        &self.select
    }

    /// `--pin-file`, as given.
    pub fn pin_file(&self) -> Option<&Path> {
        self.pin_file.as_deref()
    }

    /// True when the PIN comes from somewhere other than a prompt: `--pin-file`, the
    /// URI's pin-source, or HSM_SIGNER_PIN.
    pub fn has_pin_source(&self) -> bool {
        self.pin_file.is_some()
            || self.select.token.contains("pin-source=")
            || std::env::var_os(PIN_ENV).is_some()
    }

    /// `--pin-final-try`.
    pub fn pin_final_try(&self) -> bool {
        self.pin_final_try
    }

    /// Resolves module, selector and PIN source.
    pub fn resolve(&self) -> Result<TokenTarget> {
        let (module, selector) = self.select.resolve()?;
        let pin_file = self.pin_file.as_deref().or(selector.pin_source.as_deref());
        let pin = pin_source(pin_file, &selector)?;
        Ok(TokenTarget {
            module,
            selector,
            pin,
            allow_final_try: self.pin_final_try,
        })
    }
}

fn pin_source(file: Option<&Path>, selector: &TokenSelector) -> Result<SecretSource> {
    Ok(SecretSource::choose(
        file,
        PIN_ENV,
        &format!("User PIN for {selector}: "),
        "token PIN",
        "--pin-file",
    )?)
}

fn no_module_message() -> String {
    let found = discover_modules();
    let mut text = String::from("no PKCS#11 module given: pass --module PATH, set HSM_SIGNER_MODULE, or put module-path in the pkcs11: URI");
    if !found.is_empty() {
        text.push_str("\nModules found on this system:");
        for path in found {
            text.push_str(&format!("\n  {}", path.display()));
        }
    }
    text
}

impl TokenTarget {
    /// Opens the token and logs in, reading the PIN only now (after everything that could
    /// fail without it) and exactly once.
    pub fn open_logged_in(&self, rw: bool) -> Result<OpenToken> {
        let token = OpenToken::open(&self.module, &self.selector, rw)?;
        if rw {
            crate::token::softhsm::check_writer(&self.module, &token.info.serial)
                .map_err(anyhow::Error::msg)?;
        }
        let pin = self.pin.read("token PIN")?;
        token.login(&pin, self.allow_final_try)?;
        Ok(token)
    }
}
