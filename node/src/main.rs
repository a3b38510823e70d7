//! `lingxi`: the contact-centre switch.
//!
//! `lingxi` or `lingxi run [--config FILE]` starts a node (embedded defaults without a file).
//! `lingxi check --config FILE` validates a configuration and exits.
//! `lingxi cluster status|join|leave --api URL` inspects and changes a cluster through any
//! member's HTTP API.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lingxi_config::Config;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "lingxi",
    version,
    about = "Lingxi contact-centre switch / 灵犀联络中心交换机"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (the default).
    Run {
        /// TOML configuration file; embedded defaults when omitted.
        #[arg(long, short, env = "LINGXI_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective configuration.
    Check {
        /// TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Inspect or change a cluster through any member's HTTP API.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

/// The HTTP API used when `--api` is not given (node1 of `config/examples/cluster-3`).
const DEFAULT_API: &str = "http://127.0.0.1:8181";

#[derive(Subcommand)]
enum ClusterCmd {
    /// Leader, members, health and calls per node, as the node at `--api` sees them.
    Status {
        /// Any member's HTTP API.
        #[arg(long, env = "LINGXI_API", default_value = DEFAULT_API)]
        api: String,
        /// Print the raw JSON of `GET /api/v1/cluster`.
        #[arg(long)]
        json: bool,
    },
    /// Add a node as a voter. Start it first with `cluster.bootstrap = false`.
    Join {
        /// Any member's HTTP API (the change is forwarded to the leader).
        #[arg(long, env = "LINGXI_API", default_value = DEFAULT_API)]
        api: String,
        /// The new node's `cluster.raft_id` (never reuse one).
        #[arg(long)]
        id: u64,
        /// The new node's Raft transport address (its `cluster.listen`), host:port.
        #[arg(long)]
        addr: String,
    },
    /// Remove a node from the cluster; it stops serving.
    Leave {
        /// Any member's HTTP API.
        #[arg(long, env = "LINGXI_API", default_value = DEFAULT_API)]
        api: String,
        /// The node's `cluster.raft_id`.
        #[arg(long)]
        id: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Cmd::Run { config: None });
    if let Cmd::Cluster(c) = command {
        // A tool's error is one line for people, not a backtrace.
        if let Err(e) = cluster(c) {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    lingxi_node::telemetry::init_logging();
    match command {
        Cmd::Cluster(_) => unreachable!("handled above"),
        Cmd::Check { config } => {
            let cfg = Config::load(Some(&config)).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{}: valid ({} queues, {} agents)",
                config.display(),
                cfg.queues.len(),
                cfg.agents.len()
            );
            Ok(())
        }
        Cmd::Run { config } => {
            let cfg = Config::load(config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(run(cfg))
        }
    }
}

fn cluster(c: ClusterCmd) -> anyhow::Result<()> {
    use lingxi_node::cluster::client::{Api, render_status};
    use serde_json::json;
    match c {
        ClusterCmd::Status { api, json } => {
            let a = Api::parse(&api)?;
            let v = a.call("GET", "/api/v1/cluster", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", render_status(&api, &v));
            }
            Ok(())
        }
        ClusterCmd::Join { api, id, addr } => {
            let a = Api::parse(&api)?;
            let v = a.call(
                "POST",
                "/api/v1/cluster/members",
                Some(&json!({"id": id, "addr": addr})),
            )?;
            println!(
                "raft id {id} ({addr}) added; voters now {}",
                v["raft"]["voters"]
            );
            Ok(())
        }
        ClusterCmd::Leave { api, id } => {
            let a = Api::parse(&api)?;
            let v = a.call("DELETE", &format!("/api/v1/cluster/members/{id}"), None)?;
            println!("raft id {id} removed; voters now {}", v["raft"]["voters"]);
            Ok(())
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    // In cluster mode start-up may wait for a leader: a signal meanwhile stops it.
    let node = tokio::select! {
        n = lingxi_node::Node::start(cfg) => n?,
        _ = wait_for_signal() => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    wait_for_signal().await;
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
