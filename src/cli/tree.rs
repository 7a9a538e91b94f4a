//! `hefl __cli-tree` (hidden): the command tree as clap knows it, printed as JSON, so that a
//! test can check every `hefl ...` line of the documentation against the real flags.
//!
//! The tree is read through clap's introspection (`CommandFactory::command`, then
//! `get_subcommands` and `get_arguments` after `build`, which adds `--help`, `--version`
//! and the `help` subcommand as a user sees them), never from `--help` text.

use super::Cli;
use anyhow::Result;
use clap::{Arg, Command, CommandFactory};
use serde::Serialize;

/// One command: its name, aliases, flags and subcommands.
#[derive(Serialize)]
struct CommandNode {
    name: String,
    aliases: Vec<String>,
    hidden: bool,
    flags: Vec<Flag>,
    positionals: Vec<String>,
    subcommands: Vec<CommandNode>,
}

/// One flag: how it is spelled, and whether a value follows it.
#[derive(Serialize)]
struct Flag {
    /// The argument's id (for flags flattened from a shared struct, the field's name).
    id: String,
    long: Option<String>,
    long_aliases: Vec<String>,
    short: Option<char>,
    short_aliases: Vec<char>,
    takes_value: bool,
    global: bool,
    hidden: bool,
}

fn flag(arg: &Arg) -> Flag {
    Flag {
        id: arg.get_id().to_string(),
        long: arg.get_long().map(str::to_owned),
        long_aliases: arg
            .get_all_aliases()
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        short: arg.get_short(),
        short_aliases: arg.get_all_short_aliases().unwrap_or_default(),
        takes_value: arg.get_action().takes_values(),
        global: arg.is_global_set(),
        hidden: arg.is_hide_set(),
    }
}

fn node(command: &Command) -> CommandNode {
    let (positionals, flags): (Vec<&Arg>, Vec<&Arg>) =
        command.get_arguments().partition(|arg| arg.is_positional());
    CommandNode {
        name: command.get_name().to_owned(),
        aliases: command.get_all_aliases().map(str::to_owned).collect(),
        hidden: command.is_hide_set(),
        flags: flags.into_iter().map(flag).collect(),
        positionals: positionals
            .into_iter()
            .map(|arg| arg.get_id().to_string())
            .collect(),
        subcommands: command.get_subcommands().map(node).collect(),
    }
}

/// Prints the whole command tree as pretty JSON on stdout.
pub fn run() -> Result<()> {
    let mut command = Cli::command();
    command.build();
    println!("{}", serde_json::to_string_pretty(&node(&command))?);
    Ok(())
}
