//! The `pki` command: a thin shell over the library crates.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod commands;
mod context;
mod directory;
mod serve;
mod settings;
mod timestamp;
mod tls;
mod users;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
