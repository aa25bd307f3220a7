//! Man pages (clap_mangen) and shell completions (clap_complete) generated from the
//! real command line, for the Debian package: `session-monitor generate-docs DIR`.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes `DIR/man/session-monitor.1`, one page per subcommand
/// (`session-monitor-run.1`, ...), and `DIR/completions/` for bash, zsh and fish.
pub fn generate(out: &Path) -> Result<()> {
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    let mut cli = Cli::command();
    cli.build();
    write_man(&cli, &man, "session-monitor", "session-monitor")?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cli, "session-monitor", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
    }
    Ok(())
}

/// The page of `cmd`, named `name` (`session-monitor-audit-verify`), showing how it
/// is invoked (`session-monitor audit verify`), then its subcommands' pages.
fn write_man(cmd: &clap::Command, dir: &Path, name: &str, invocation: &str) -> Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    let page = cmd
        .clone()
        .display_name(name.to_string())
        .bin_name(invocation.to_string());
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .title(name.to_string())
        .render(&mut text)?;
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            write_man(
                sub,
                dir,
                &format!("{name}-{}", sub.get_name()),
                &format!("{invocation} {}", sub.get_name()),
            )?;
        }
    }
    Ok(())
}
