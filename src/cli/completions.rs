//! `permdrift completions SHELL` and `permdrift man`: shell completion
//! scripts and a roff man page, generated from the clap definitions in
//! src/cli/mod.rs, so they always match the flags that exist.

use super::{Cli, Ctx, output};
use clap::CommandFactory;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "permdrift", &mut out);
    out
}

/// The man page, permdrift(1), in roff.
pub fn man() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out)
}

pub fn run_completions(_ctx: &Ctx, args: CompletionsArgs) -> anyhow::Result<u8> {
    output::print(&String::from_utf8_lossy(&completions(args.shell)))?;
    Ok(0)
}

pub fn run_man(_ctx: &Ctx, _args: ManArgs) -> anyhow::Result<u8> {
    output::print(&String::from_utf8_lossy(&man()?))?;
    Ok(0)
}
