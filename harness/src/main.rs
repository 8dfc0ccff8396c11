//! `devnet`: the harness's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Start, perturb and check Blyan devnets.
#[derive(Parser)]
#[command(name = "devnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a devnet (arrives with the P2P and Docker harness issues).
    Up,
    /// Stop a devnet and remove its resources.
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Up => "up",
        Command::Down => "down",
    };
    eprintln!(
        "error: `devnet {name}` is not built yet: a multi-node devnet needs consensus and P2P. \
         For now run a single node: cargo run --release -p blyan-node -- init --home .devnet/node0 \
         && cargo run --release -p blyan-node -- start --home .devnet/node0"
    );
    ExitCode::FAILURE
}
