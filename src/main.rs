//! The `pki` command: a thin shell over the library crates.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod commands;
mod context;
mod serve;
mod settings;
mod timestamp;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
