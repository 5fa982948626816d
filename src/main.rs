//! The `pki` command: a thin shell over the library crates.
#![forbid(unsafe_code)]

mod actor;
mod admin_socket;
mod audit_checkpoints;
mod cli;
mod commands;
mod context;
mod custody_db;
mod db_copy;
mod directory;
mod enrolment;
mod escrow;
mod guard;
mod input;
mod limits;
mod listeners;
mod mail;
mod mail_relay;
mod mail_settings;
mod metrics;
mod serve;
mod settings;
mod timestamp;
mod tls;
mod users;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc. With a million certificates (sled's page cache holding
/// gigabytes) glibc's allocator made the directory answer 28,000 instead of 40,000 `exists` per
/// second and the load issue 6,200 instead of 10,500 certificates per second; it costs the OCSP
/// responder about 6 % on signed answers (BENCHMARKS.md, issues 3 and 4).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run()
}
