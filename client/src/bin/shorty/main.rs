//! `shorty`: command-line client and load generator for Shorty.

mod bench;
mod links;
mod report;

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use shorty_client::{Client, Granularity, Options, StatsQuery};

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

    /// An API key, presented (AUTH, protocol version 2) before anything
    /// else.
    #[arg(long, env = "SHORTY_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,

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
        /// Options of the new links (protocol version 2).
        #[command(flatten)]
        options: links::CreateArgs,
    },
    /// Change a link: its URL and options (protocol version 2). Prints it
    /// as it is now.
    Update {
        /// A code or a short URL.
        code: String,
        /// The new long URL.
        url: Option<String>,
        #[command(flatten)]
        changes: links::UpdateArgs,
    },
    /// Delete a link (protocol version 2).
    Delete {
        /// A code or a short URL.
        code: String,
    },
    /// A link's clicks: totals, an hourly chart and the top referrers
    /// (protocol version 2).
    Stats {
        /// A code or a short URL.
        code: String,
        /// Hours the chart covers, up to now (at most 1000).
        #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u64).range(1..=1000))]
        hours: u64,
        /// Print JSON for machines.
        #[arg(long)]
        json: bool,
    },
    /// Print the long URL behind a code or a short URL.
    Resolve {
        /// A code (`867nvAB`) or a short URL (`http://127.0.0.1:5000/867nvAB`).
        code: String,
    },
    /// Check the server answers and print the round-trip time.
    Ping,
    /// Print a link's URL, options and clicks (protocol version 2); without
    /// a code, the server's protocol version and limits (HELLO).
    Info {
        /// A code or a short URL.
        code: Option<String>,
        /// Print JSON for machines (with a code).
        #[arg(long, requires = "code")]
        json: bool,
    },
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
    let mut client = Client::connect_with(cli.server.as_str(), options)
        .map_err(|e| format!("cannot connect to {}: {e}", cli.server))?;
    if let Some(key) = &cli.api_key {
        client.auth(key).map_err(|e| format!("--api-key: {e}"))?;
    }
    Ok(client)
}

/// URLs sent per pipelined batch when reading from standard input.
const STDIN_BATCH: usize = 1000;

fn run(cli: Cli) -> Result<ExitCode, String> {
    if cli.legacy
        && matches!(
            cli.command,
            Command::Resolve { .. }
                | Command::Ping
                | Command::Info { .. }
                | Command::Update { .. }
                | Command::Delete { .. }
                | Command::Stats { .. }
        )
    {
        return Err("--legacy only applies to `shorten` and `bench`".into());
    }
    let now = SystemTime::now();
    match &cli.command {
        Command::Shorten { urls, options } if options.any() => {
            if cli.legacy {
                return Err("--legacy cannot carry link options".into());
            }
            if urls.iter().any(|u| u == "-") {
                return Err("`-` (URLs from stdin) cannot take link options".into());
            }
            if options.alias.is_some() && urls.len() != 1 {
                return Err("--alias names one link: give one URL".into());
            }
            let link_options = options.options(now)?;
            let mut client = connect(&cli)?;
            for url in urls {
                let link = client
                    .shorten_with(url, &link_options)
                    .map_err(|e| format!("{url}: {e}"))?;
                println!("{}", link.short_url.unwrap_or(link.code));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Update { code, url, changes } => {
            let patch = changes.patch(url.as_deref(), now)?;
            let link = connect(&cli)?
                .update(code, &patch)
                .map_err(|e| e.to_string())?;
            print!("{}", links::render_link(&link));
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { code } => {
            connect(&cli)?.delete(code).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Info {
            code: Some(code),
            json,
        } => {
            let link = connect(&cli)?.info(code).map_err(|e| e.to_string())?;
            if *json {
                println!("{}", links::link_json(&link));
            } else {
                print!("{}", links::render_link(&link));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { code, hours, json } => {
            let now_ms = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let (from, to) = links::stats_range(now_ms, *hours);
            let query = StatsQuery::new(from, to, Granularity::Hour);
            let stats = connect(&cli)?
                .stats(code, query)
                .map_err(|e| e.to_string())?;
            let code = shorty_client::code_of(code);
            if *json {
                println!("{}", links::stats_json(code, &stats));
            } else {
                print!("{}", links::render_stats(code, &stats, from, to));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Shorten { urls, .. } => {
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
        Command::Info { code: None, .. } => {
            // HELLO 2: the server answers the highest version it speaks
            // (a HELLO 1 would only ever be told 1).
            let info = connect(&cli)?.hello_v2().map_err(|e| e.to_string())?;
            println!("server:          {}", cli.server);
            println!("protocol:        {}", info.version);
            println!("max frame bytes: {}", info.max_frame_len);
            println!("max URL bytes:   {}", info.max_url_len);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench::run(&cli.server, cli.legacy, cli.timeout, args),
    }
}
