//! The first admin: created at start-up when the replicated state has no admin user.
//!
//! Only a single node or the Raft leader proposes it (a follower waits and sees it applied),
//! and the command is create-only, so two nodes racing cannot both succeed. The password comes
//! from `auth.admin_password` (meant for `LINGXI__AUTH__ADMIN_PASSWORD`), else
//! `auth.admin_password_file`, else it is generated and written to
//! `<data_dir>/initial-admin-password` (mode 0600) and the log says where — like Jenkins'
//! `initialAdminPassword`. There is never a built-in password.

use super::{hash_password_async, new_token};
use anyhow::Context as _;
use lingxi_cluster::model::Role;
use lingxi_cluster::raft::RaftRole;
use lingxi_cluster::{ClusterError, Command, Log};
use lingxi_config::Config;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Name of the generated password file in `node.data_dir`.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// Where the first admin's password comes from.
enum Source {
    /// Given in config or the environment.
    Given(String),
    /// To be generated (or reused from an earlier run) at this path.
    Generated(PathBuf),
}

/// Reads the configured password now (a missing or empty `admin_password_file` is a start-up
/// error naming it), then in the background creates the first admin once this node may
/// (single node, or Raft leader) and no admin exists. Returns at once.
pub fn spawn_first_admin(
    log: Log,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let auth = &config.auth;
    let source = if let Some(pw) = auth.admin_password.clone() {
        Source::Given(pw)
    } else if let Some(path) = &auth.admin_password_file {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "auth.admin_password_file: cannot read {} / 无法读取管理员密码文件",
                path.display()
            )
        })?;
        let pw = text.lines().next().unwrap_or("").trim().to_string();
        if pw.len() < 8 {
            anyhow::bail!(
                "auth.admin_password_file: {} must hold a password of at least 8 characters on its first line",
                path.display()
            );
        }
        Source::Given(pw)
    } else {
        Source::Generated(config.node.data_dir.join(INITIAL_PASSWORD_FILE))
    };
    Ok(tokio::spawn(async move {
        loop {
            if log.read(|sm| sm.users().values().any(|u| u.role == Role::Admin)) {
                return;
            }
            let may_propose = match log.raft_status() {
                None => true,
                Some(s) => s.role == RaftRole::Leader && !s.removed,
            };
            if may_propose {
                match create(&log, &config, &source).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "first admin not created yet; retrying"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }))
}

async fn create(log: &Log, config: &Config, source: &Source) -> anyhow::Result<()> {
    let username = config.auth.admin_user.clone();
    let (password, file) = match source {
        Source::Given(pw) => (pw.clone(), None),
        Source::Generated(path) => (read_or_generate(path)?, Some(path.clone())),
    };
    let password_hash = hash_password_async(password).await?;
    let cmd = Command::UpsertUser {
        username: username.clone(),
        display_name: "Administrator / 管理员".into(),
        role: Role::Admin,
        agent_id: None,
        password_hash,
        create_only: true,
        at_ms: super::now_ms(),
    };
    match log.propose(cmd).await {
        Ok(_) => {
            match &file {
                Some(path) => tracing::warn!(
                    user = %username,
                    password_file = %path.display(),
                    "first admin created; its password is in the file (read it, log in, change it, delete the file) / 已创建初始管理员，密码见该文件"
                ),
                None => tracing::info!(user = %username, "first admin created from auth config"),
            }
            Ok(())
        }
        Err(ClusterError::Conflict { detail, .. }) => {
            // Another node created it first, or a user of that name exists without being admin.
            if let Some(path) = &file
                && log.read(|sm| sm.user(&username).is_some_and(|u| u.role == Role::Admin))
            {
                let _ = std::fs::remove_file(path);
            }
            if log.read(|sm| sm.users().values().any(|u| u.role == Role::Admin)) {
                Ok(())
            } else {
                anyhow::bail!(
                    "auth.admin_user: cannot create {username} as the first admin: {detail}"
                )
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The password in `path` from an earlier run that did not get to create the admin, else a new
/// random one written there with mode 0600.
fn read_or_generate(path: &Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let pw = text.trim();
        if pw.len() >= 8 {
            return Ok(pw.to_string());
        }
    }
    let password = new_token()[..24].to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_private(path, &format!("{password}\n")).with_context(|| {
        format!(
            "cannot write the initial admin password to {}",
            path.display()
        )
    })?;
    Ok(password)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
