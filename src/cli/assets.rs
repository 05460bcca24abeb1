//! `hsm-signer assets DIR` (hidden): the man pages and shell completions, made from the
//! same clap definitions as `--help`, for the Debian package (scripts/package).

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::args::Cli;

/// Writes `DIR/man/hsm-signer.1` and one page per subcommand (`hsm-signer-import.1`, …),
/// and `DIR/completions/hsm-signer.bash`, `_hsm-signer` (zsh) and `hsm-signer.fish`.
pub fn write(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let command = Cli::command();
    write_page(&man, "hsm-signer", command.clone())?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("hsm-signer-{}", sub.get_name());
        write_page(&man, &name, sub.clone().bin_name(&name).display_name(&name))?;
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, "hsm-signer.bash"),
        (clap_complete::Shell::Zsh, "_hsm-signer"),
        (clap_complete::Shell::Fish, "hsm-signer.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "hsm-signer", &mut out);
        let path = completions.join(file);
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command)
        .title(name.to_uppercase())
        .section("1")
        .source(format!("hsm-signer {}", env!("CARGO_PKG_VERSION")))
        .manual("hsm-signer")
        .render(&mut out)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
}
