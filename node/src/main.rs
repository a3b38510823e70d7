//! `lingxi`: the contact-centre switch.
//!
//! `lingxi` or `lingxi run [--config FILE]` starts a node (embedded defaults without a file).
//! `lingxi check --config FILE` validates a configuration and exits.
//! `lingxi cluster status|join|leave --api URL [--token T]` inspects and changes a cluster
//! through any member's HTTP API (`--token` or `LINGXI_TOKEN`: an API key or session token).
//! `lingxi auth hash-password` reads a password on stdin and prints its argon2id hash;
//! `lingxi auth new-api-key --name N --role R` prints a new key once, with its config lines.
//!
//! A node's exit codes: 0 after a signal; 65 (`EX_DATAERR`) when its Raft or CDR storage is
//! damaged, so it cannot start and must be rebuilt from its peers (README: "Rebuilding a
//! node"; keep a service manager from restarting it: systemd `RestartPreventExitStatus=65`);
//! 75 when its storage failed while running (restart it); 1 for any other start-up error.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lingxi_config::Config;
use std::path::{Path, PathBuf};
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
    let rebuild = RebuildHint::of(&cfg);
    // In cluster mode start-up may wait for a leader: a signal meanwhile stops it.
    let node = tokio::select! {
        n = lingxi_node::Node::start(cfg) => match n {
            Ok(n) => n,
            Err(e) => match damaged_storage(&e, &rebuild.data_dir) {
                Some(dir) => {
                    rebuild.report(&dir, &e);
                    std::process::exit(EXIT_STORAGE_DAMAGED);
                }
                None => return Err(e),
            },
        },
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

/// Exit code of a node whose storage is damaged (`EX_DATAERR`): restarting cannot help, so
/// the service manager must not restart it in a loop (systemd `RestartPreventExitStatus=65`).
const EXIT_STORAGE_DAMAGED: i32 = 65;

/// Which storage directory a start-up error says cannot be read: the Raft log
/// (`<data_dir>/raft`) or the CDR storage, which is the whole state on a single node
/// (`<data_dir>/state`). `None`: some other failure (a port taken, a full disk, I/O), which
/// keeps the usual exit.
fn damaged_storage(e: &anyhow::Error, data_dir: &Path) -> Option<PathBuf> {
    use lingxi_cluster::raft::{RaftError, is_corruption};
    // Raft storage errors wrap sled's, CDR storage errors are `ClusterError`s: the first
    // match in the chain (outermost first) names the storage that failed.
    e.chain().find_map(|cause| {
        if cause
            .downcast_ref::<RaftError>()
            .is_some_and(RaftError::is_damage)
        {
            Some(data_dir.join("raft"))
        } else if cause
            .downcast_ref::<lingxi_cluster::ClusterError>()
            .is_some_and(is_corruption)
        {
            Some(data_dir.join("state"))
        } else {
            None
        }
    })
}

/// The error and its causes on one line, `: `-separated, leaving out a cause whose text the
/// one before already ends with (storage errors print their source in their own message).
fn causes(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// What the operator needs to rebuild this node, taken from its config before start-up.
struct RebuildHint {
    /// `node.data_dir`.
    data_dir: PathBuf,
    /// `cluster.enabled`: a single node has no peers to rebuild from.
    clustered: bool,
    /// `cluster.raft_id`: the id to remove from the cluster.
    raft_id: u64,
    /// `cluster.listen`: the address to join with.
    raft_listen: std::net::SocketAddr,
}

impl RebuildHint {
    fn of(cfg: &Config) -> RebuildHint {
        RebuildHint {
            data_dir: cfg.node.data_dir.clone(),
            clustered: cfg.cluster.enabled,
            raft_id: cfg.cluster.raft_id,
            raft_listen: cfg.cluster.listen,
        }
    }

    /// Says, in English and Chinese, which storage is damaged and how to rebuild the node
    /// (README: "Rebuilding a node whose storage is damaged").
    fn report(&self, dir: &Path, e: &anyhow::Error) {
        let dir_s = dir.display();
        tracing::error!(dir = %dir_s, error = %causes(e), exit_code = EXIT_STORAGE_DAMAGED,
            "storage damaged: the node cannot start from it; rebuild it (README: Rebuilding a node) / 存储损坏，需重建节点");
        let data = self.data_dir.display();
        let id = self.raft_id;
        let addr = if self.raft_listen.ip().is_unspecified() {
            format!("<this host>:{}", self.raft_listen.port())
        } else {
            self.raft_listen.to_string()
        };
        let what_to_do = if self.clustered {
            format!(
                "Restarting will not help (exit code {EXIT_STORAGE_DAMAGED}). Rebuild this node from its peers \
                 (README: \"Rebuilding a node whose storage is damaged\"):
  1. lingxi cluster leave --api http://<a live member's HTTP> --id {id}
  2. mv {data}/raft {data}/raft.damaged && mv {data}/state {data}/state.damaged   (keep them for analysis)
  3. in this node's config: cluster.raft_id = <a new id, never used before>, cluster.bootstrap = false
  4. start the node, then: lingxi cluster join --api http://<a live member's HTTP> --id <new id> --addr {addr}
重启无济于事（退出码 {EXIT_STORAGE_DAMAGED}）。请从其他节点重建本节点（见 README「重建存储损坏的节点」）：
  1. 在任一存活节点上移除旧的 raft id {id}（lingxi cluster leave --id {id}）；
  2. 将 {data}/raft 与 {data}/state 移到别处保留，供分析；
  3. 在本节点配置中设置新的 cluster.raft_id（从未用过的）和 cluster.bootstrap = false；
  4. 启动本节点，再执行 lingxi cluster join --id <新 id> --addr {addr}，它会从 leader 的快照追上。"
            )
        } else {
            format!(
                "Restarting will not help (exit code {EXIT_STORAGE_DAMAGED}). A single node (cluster.enabled = false) \
                 has no peers to rebuild from: move {dir_s} aside (keep it for analysis) and restore it from a backup.
重启无济于事（退出码 {EXIT_STORAGE_DAMAGED}）。单节点没有可用于重建的副本：请将 {dir_s} 移到别处保留，并从备份恢复。"
            )
        };
        eprintln!(
            "error: the storage in {dir_s} is damaged and cannot be read / 存储已损坏，无法读取：{dir_s}
  cause: {}
{what_to_do}",
            causes(e)
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use lingxi_cluster::raft::RaftError;
    use lingxi_cluster::{ClusterError, SledStore};

    #[test]
    fn inconsistent_raft_log_is_damage_of_the_raft_dir() {
        let e = anyhow::Error::new(RaftError::Corrupt {
            detail: "log entry 9 follows 7".into(),
        })
        .context("cannot open Raft storage in /d/raft");
        assert_eq!(
            damaged_storage(&e, Path::new("/d")),
            Some(PathBuf::from("/d/raft"))
        );
    }

    #[test]
    fn other_start_up_errors_are_not_damage() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = anyhow::Error::new(io).context("cannot bind the Raft transport");
        assert_eq!(damaged_storage(&e, Path::new("/d")), None);
        let e = anyhow::Error::new(ClusterError::Unavailable {
            node: 1,
            detail: "no leader".into(),
        });
        assert_eq!(damaged_storage(&e, Path::new("/d")), None);
    }

    /// sled's own check: a damaged snapshot file fails the CDR storage's open with
    /// `Corruption`, which names `<data_dir>/state`.
    #[test]
    fn corrupted_sled_storage_is_damage_of_the_state_dir() {
        let data = std::env::temp_dir().join(format!("lingxi-damage-{}", std::process::id()));
        let state = data.join("state");
        let _ = std::fs::remove_dir_all(&data);
        // Opening an existing database writes sled's snapshot file.
        for _ in 0..2 {
            drop(SledStore::open(&state).expect("a fresh store opens"));
        }
        let snap = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("snap.")
            })
            .expect("sled wrote a snapshot file");
        let mut bytes = std::fs::read(&snap).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        std::fs::write(&snap, bytes).unwrap();
        let err = SledStore::open(&state)
            .err()
            .expect("the damaged store fails");
        let e = anyhow::Error::new(err).context("cannot open CDR storage");
        let found = damaged_storage(&e, &data);
        let _ = std::fs::remove_dir_all(&data);
        assert_eq!(found, Some(state), "{e:#}");
    }
}
