//! `lingxi`: the contact-centre switch.
//!
//! `lingxi` or `lingxi run [--config FILE]` starts a node (embedded defaults without a file).
//! `lingxi check --config FILE` validates a configuration and exits.

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    lingxi_node::telemetry::init_logging();
    match cli.command.unwrap_or(Cmd::Run { config: None }) {
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

async fn run(cfg: Config) -> anyhow::Result<()> {
    let node = lingxi_node::Node::start(cfg).await?;
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
