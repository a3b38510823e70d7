//! `lingxi`: the contact-centre switch.
//!
//! `lingxi` or `lingxi run [--config FILE]` starts a node (embedded defaults without a file).
//! `lingxi check --config FILE` validates a configuration and exits.
//! `lingxi cluster status|join|leave --api URL [--token T]` inspects and changes a cluster
//! through any member's HTTP API (`--token` or `LINGXI_TOKEN`: an API key or session token).
//! `lingxi auth hash-password` reads a password on stdin and prints its argon2id hash;
//! `lingxi auth new-api-key --name N --role R` prints a new key once, with its config lines.

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
    /// Passwords and API keys for `[auth]` / 密码与 API 密钥.
    #[command(subcommand)]
    Auth(AuthCmd),
}

#[derive(Subcommand)]
enum AuthCmd {
    /// Read a password from stdin (first line) and print its argon2id PHC hash, for
    /// `POST /api/v1/users {"password_hash": …}`.
    HashPassword,
    /// Log in: reads the password from stdin (first line) and prints a session token, for
    /// `export LINGXI_TOKEN=$(lingxi auth login --user admin < password-file)`.
    Login {
        /// Any node's HTTP API.
        #[arg(long, env = "LINGXI_API", default_value = DEFAULT_API)]
        api: String,
        /// Username.
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// Print a new random API key (shown only now) and the `[[auth.api_keys]]` lines holding
    /// its SHA-256.
    NewApiKey {
        /// Name shown in logs (`apikey:<name>`).
        #[arg(long)]
        name: String,
        /// admin, supervisor or agent.
        #[arg(long)]
        role: String,
    },
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
        /// Bearer token: an API key or a session token (supervisor or admin).
        #[arg(long, env = "LINGXI_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the raw JSON of `GET /api/v1/cluster`.
        #[arg(long)]
        json: bool,
    },
    /// Add a node as a voter. Start it first with `cluster.bootstrap = false`.
    Join {
        /// Any member's HTTP API (the change is forwarded to the leader).
        #[arg(long, env = "LINGXI_API", default_value = DEFAULT_API)]
        api: String,
        /// Bearer token of an admin: an API key or a session token.
        #[arg(long, env = "LINGXI_TOKEN", hide_env_values = true)]
        token: Option<String>,
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
        /// Bearer token of an admin: an API key or a session token.
        #[arg(long, env = "LINGXI_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The node's `cluster.raft_id`.
        #[arg(long)]
        id: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Cmd::Run { config: None });
    let tool = match command {
        Cmd::Cluster(c) => Some(cluster(c)),
        Cmd::Auth(a) => Some(auth(a)),
        other => {
            lingxi_node::telemetry::init_logging();
            return node_command(other);
        }
    };
    // A tool's error is one line for people, not a backtrace.
    if let Some(Err(e)) = tool {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn auth(a: AuthCmd) -> anyhow::Result<()> {
    use lingxi_node::auth;
    match a {
        AuthCmd::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let pw = line.trim_end_matches(['\r', '\n']);
            if pw.chars().count() < 8 {
                anyhow::bail!("the password must be at least 8 characters / 密码至少 8 个字符");
            }
            println!("{}", auth::hash_password(pw)?);
            Ok(())
        }
        AuthCmd::Login { api, user } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let password = line.trim_end_matches(['\r', '\n']);
            let a = lingxi_node::cluster::client::Api::parse(&api)?;
            let v = a.call(
                "POST",
                "/api/v1/auth/login",
                Some(&serde_json::json!({"username": user, "password": password})),
            )?;
            let token = v["token"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("the login answer has no token: {v}"))?;
            println!("{token}");
            Ok(())
        }
        AuthCmd::NewApiKey { name, role } => {
            if auth::Role::parse(&role).is_none() {
                anyhow::bail!("--role {role}: expected admin, supervisor or agent");
            }
            if name.is_empty() || name.contains(['"', '\\', '\n']) {
                anyhow::bail!("--name {name:?}: expected a short name without quotes");
            }
            let key = format!("lxk_{}", auth::new_token());
            println!("# API key (shown only now; send it as `Authorization: Bearer <key>`):");
            println!("#   {key}");
            println!("# Add to the config of every node:");
            println!("[[auth.api_keys]]");
            println!("name = \"{name}\"");
            println!("role = \"{role}\"");
            println!("sha256 = \"{}\"", auth::sha256_hex(&key));
            Ok(())
        }
    }
}

fn node_command(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Cluster(_) | Cmd::Auth(_) => unreachable!("tools are handled in main"),
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
        ClusterCmd::Status { api, token, json } => {
            let a = Api::parse(&api)?.with_token(token);
            let v = a.call("GET", "/api/v1/cluster", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", render_status(&api, &v));
            }
            Ok(())
        }
        ClusterCmd::Join {
            api,
            token,
            id,
            addr,
        } => {
            let a = Api::parse(&api)?.with_token(token);
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
        ClusterCmd::Leave { api, token, id } => {
            let a = Api::parse(&api)?.with_token(token);
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
    tokio::select! {
        _ = wait_for_signal() => {}
        why = node.failed() => {
            // No goodbye: the node has already lost its lease, its calls resume on the others;
            // a BYE from here would end them. The service manager restarts the node.
            tracing::error!(error = %why, "the replicated log failed (storage full or failing); exiting so the service manager restarts this node / 存储故障，节点退出待重启");
            std::process::exit(75);
        }
    }
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
