//! The `shimmer` command line: parses arguments and calls the library.

mod bench;
mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    shimmer_sys::process::restore_default_sigpipe();
    shimmer_sys::process::keep_freed_memory();
    shimmer_train::provenance::register_host_build(cli::host_build());
    let args = <cli::Cli as clap::Parser>::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_paragraph(&e));
            ExitCode::from(shimmer_train::failure::exit_code(&e))
        }
    }
}
