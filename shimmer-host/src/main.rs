//! The `shimmer` command line: parses arguments and calls the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = <cli::Cli as clap::Parser>::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_paragraph(&e));
            ExitCode::from(2)
        }
    }
}
