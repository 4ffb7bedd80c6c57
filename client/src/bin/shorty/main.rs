//! `shorty`: command-line client and load generator for Shorty.

mod bench;
mod report;

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shorty_client::{Client, Options};

#[derive(Debug, Parser)]
#[command(
    name = "shorty",
    version,
    about = "Client for the Shorty URL shortener"
)]
struct Cli {
    /// Server address.
    #[arg(
        long,
        short,
        env = "SHORTY_SERVER",
        default_value = "127.0.0.1:9000",
        global = true
    )]
    server: String,

    /// Speak the original bare-URL exchange (length + URL in, length +
    /// short URL out) instead of typed messages. Only `shorten` and `bench
    /// --op shorten` can use it.
    #[arg(long, global = true)]
    legacy: bool,

    /// Connect, read and write timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Shorten URLs and print one short URL per line. `-` reads URLs from
    /// standard input, one per line, and sends them pipelined.
    Shorten {
        /// The long URLs, or `-`.
        #[arg(required = true)]
        urls: Vec<String>,
    },
    /// Print the long URL behind a code or a short URL.
    Resolve {
        /// A code (`867nvAB`) or a short URL (`http://127.0.0.1:5000/867nvAB`).
        code: String,
    },
    /// Check the server answers and print the round-trip time.
    Ping,
    /// Print the server's protocol version and limits (HELLO).
    Info,
    /// Load-test a server, like the original Shorty benchmark (and wrk).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("shorty: {err}");
            ExitCode::FAILURE
        }
    }
}

fn connect(cli: &Cli) -> Result<Client, String> {
    let options = Options::default()
        .connect_timeout(cli.timeout)
        .read_timeout(Some(cli.timeout))
        .write_timeout(Some(cli.timeout));
    Client::connect_with(cli.server.as_str(), options)
        .map_err(|e| format!("cannot connect to {}: {e}", cli.server))
}

/// URLs sent per pipelined batch when reading from standard input.
const STDIN_BATCH: usize = 1000;

fn run(cli: Cli) -> Result<ExitCode, String> {
    if cli.legacy
        && matches!(
            cli.command,
            Command::Resolve { .. } | Command::Ping | Command::Info
        )
    {
        return Err("--legacy only applies to `shorten` and `bench`".into());
    }
    match &cli.command {
        Command::Shorten { urls } => {
            let mut client = connect(&cli)?;
            let mut failed = false;
            let mut shorten_batch = |batch: &[String]| -> Result<(), String> {
                let results: Vec<_> = if cli.legacy {
                    batch.iter().map(|u| client.shorten_legacy(u)).collect()
                } else {
                    client.shorten_all(batch).map_err(|e| e.to_string())?
                };
                for (url, result) in batch.iter().zip(results) {
                    match result {
                        Ok(short) => println!("{short}"),
                        Err(err) => {
                            eprintln!("shorty: {url}: {err}");
                            failed = true;
                        }
                    }
                }
                Ok(())
            };
            if urls.len() == 1 && urls[0] == "-" {
                let mut batch = Vec::with_capacity(STDIN_BATCH);
                for line in std::io::stdin().lock().lines() {
                    let line = line.map_err(|e| format!("reading standard input: {e}"))?;
                    let url = line.trim();
                    if !url.is_empty() {
                        batch.push(url.to_owned());
                    }
                    if batch.len() == STDIN_BATCH {
                        shorten_batch(&batch)?;
                        batch.clear();
                    }
                }
                shorten_batch(&batch)?;
            } else {
                shorten_batch(urls)?;
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Resolve { code } => {
            let url = connect(&cli)?.resolve(code).map_err(|e| e.to_string())?;
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ping => {
            let rtt = connect(&cli)?.ping().map_err(|e| e.to_string())?;
            println!(
                "pong from {} in {:.3} ms",
                cli.server,
                rtt.as_secs_f64() * 1e3
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Info => {
            let info = connect(&cli)?.hello().map_err(|e| e.to_string())?;
            println!("server:          {}", cli.server);
            println!("protocol:        {}", info.version);
            println!("max frame bytes: {}", info.max_frame_len);
            println!("max URL bytes:   {}", info.max_url_len);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench::run(&cli.server, cli.legacy, cli.timeout, args),
    }
}
