//! `bootchain generate man DIR` and `bootchain generate completions SHELL` (hidden): man pages
//! and shell completions rendered from the clap definition in `main.rs`, so the packaged
//! documentation cannot drift from the options the binary accepts. `scripts/package` runs them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Command, CommandFactory, Subcommand};

#[derive(Subcommand)]
pub enum GenerateCmd {
    /// Write one man page per command into DIR (section 1): bootchain.1, bootchain-uki.1,
    /// bootchain-uki-build.1, … Hidden commands are left out.
    Man {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

pub fn run(cmd: GenerateCmd) -> Result<ExitCode> {
    let root = crate::Cli::command();
    match cmd {
        GenerateCmd::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut root = root.disable_help_subcommand(true);
            // Resolves display names: a subcommand's page is named `bootchain-uki-build`.
            root.build();
            let source = format!("bootchain {}", env!("CARGO_PKG_VERSION"));
            write_pages(&root, &dir, &source)?;
        }
        GenerateCmd::Completions { shell } => {
            let mut root = root;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut root, "bootchain", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The page of `cmd` and, recursively, of its visible subcommands. The date is left empty
/// (clap_mangen's default) so that a rebuild from the same source is byte-identical.
fn write_pages(cmd: &Command, dir: &Path, source: &str) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, source)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .source(source)
        .manual("bootchain manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("rendering {}", path.display()))?;
    bootchain::fsutil::write_atomic(&path, &page, 0o644)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
