//! Watching the nodes while the run goes: every half second each node that is up is asked for
//! its cluster view (healthy? applied and commit index) and its live calls. From that:
//! indexes never go back (`no_rollback`), no call is claimed by two healthy nodes
//! (`single_owner`), and no node's state has an agent on two calls (`single_offer`).
//! Every [`DISK_EVERY`] rounds it also weighs each node's data directory: how much a node's
//! storage grows under load is a figure of the report, not a guess.

use super::load::Load;
use lingxi_chaos::invariants::Violation;
use lingxi_chaos::invariants::no_rollback::{NoRollback, ProgressSample};
use lingxi_chaos::invariants::single_owner;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How long one poll of one node may take (a frozen node never answers).
const POLL_TIMEOUT: Duration = Duration::from_millis(1500);

/// Rounds between two weighings of the data directories (60 × 0.5 s: every 30 s).
const DISK_EVERY: u64 = 60;

/// What one node's data directory held on disk (allocated bytes, the runner's ballast
/// files left out) over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskUse {
    /// At the first weighing, when the load began.
    pub start: u64,
    /// The most seen at any weighing.
    pub peak: u64,
    /// After the run, once the cluster settled.
    pub end: u64,
    /// `end` by top-level entry of the data directory (`raft`, `state`, `recordings`...):
    /// which store grew.
    pub end_by_dir: BTreeMap<String, u64>,
}

/// Bytes allocated on disk under `dir`, in all and by top-level entry, leaving out the
/// runner's own files there (`chaos-ballast*`, ext4's `lost+found`). What cannot be read
/// (a file removed while walking) counts as nothing.
pub fn disk_use(dir: &Path) -> (u64, BTreeMap<String, u64>) {
    let mut by = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("chaos-ballast") || name == "lost+found" {
            continue;
        }
        by.insert(name, lingxi_cluster::bytes_on_disk(&e.path()));
    }
    (by.values().sum(), by)
}

/// One node's answers in one round.
struct NodeView {
    /// Node index.
    i: usize,
    /// `healthy` in its cluster view (not fenced, not stopping).
    healthy: bool,
    /// Raft applied index.
    applied: u64,
    /// Raft commit index.
    commit: u64,
    /// Its live calls.
    calls: Vec<Value>,
}

/// What the poller has seen.
pub struct Observer {
    /// Node names, by index.
    names: Vec<String>,
    /// Their data directories, by index (weighed every [`DISK_EVERY`] rounds).
    data_dirs: Vec<PathBuf>,
    /// What each data directory held, by index.
    disk: Mutex<Vec<DiskUse>>,
    /// Which run of each node (1 at start, +1 per restart).
    pub incarnation: Vec<AtomicU32>,
    /// Rounds polled.
    pub rounds: AtomicU64,
    /// Checker of indexes going back.
    rollback: Mutex<NoRollback>,
    /// Calls claimed by two healthy nodes in the previous round.
    prev_double: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Calls claimed twice in one round only (a poll racing a handover; reported, not failed).
    pub transient_double: Mutex<Vec<String>>,
    /// Violations found.
    pub violations: Mutex<Vec<Violation>>,
    /// Details already reported (each once).
    seen: Mutex<HashSet<String>>,
}

impl Observer {
    /// An observer of nodes `names`, whose data directories are `data_dirs`.
    pub fn new(names: Vec<String>, data_dirs: Vec<PathBuf>) -> Observer {
        Observer {
            incarnation: names.iter().map(|_| AtomicU32::new(1)).collect(),
            disk: Mutex::new(vec![DiskUse::default(); names.len()]),
            data_dirs,
            names,
            rounds: AtomicU64::new(0),
            rollback: Mutex::new(NoRollback::new()),
            prev_double: Mutex::new(BTreeMap::new()),
            transient_double: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn report(&self, v: Violation) {
        let key = format!("{}|{:?}|{}", v.invariant, v.node, v.detail);
        if self.seen.lock().unwrap().insert(key) {
            self.violations.lock().unwrap().push(v);
        }
    }

    /// Weighs every node's data directory; `last`: the weighing after the run.
    pub async fn weigh_data(&self, last: bool) {
        let dirs = self.data_dirs.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || {
            dirs.iter().map(|d| disk_use(d)).collect::<Vec<_>>()
        })
        .await
        else {
            return;
        };
        let mut disk = self.disk.lock().unwrap();
        let first = self.rounds.load(Ordering::Relaxed) == 0;
        for (u, (total, by)) in disk.iter_mut().zip(now) {
            if first {
                u.start = total;
            }
            u.peak = u.peak.max(total);
            if last {
                u.end = total;
                u.end_by_dir = by;
            }
        }
    }

    /// What each node's data directory held, by node name.
    pub fn disk_by_node(&self) -> BTreeMap<String, DiskUse> {
        self.names
            .iter()
            .cloned()
            .zip(self.disk.lock().unwrap().iter().cloned())
            .collect()
    }

    /// Polls every node that is up, once, and checks what came back.
    pub async fn round(&self, load: &Arc<Load>) {
        if self
            .rounds
            .load(Ordering::Relaxed)
            .is_multiple_of(DISK_EVERY)
        {
            self.weigh_data(false).await;
        }
        let down = load.down.lock().unwrap().clone();
        let mut set = tokio::task::JoinSet::new();
        for (i, d) in down.iter().enumerate() {
            if *d {
                continue;
            }
            let http = load.http[i];
            let inc = self.incarnation[i].load(Ordering::Relaxed);
            set.spawn(async move {
                let get = |path: &'static str| async move {
                    let r = tokio::time::timeout(
                        POLL_TIMEOUT,
                        lingxi_tests::node::http_request(http, "GET", path, None),
                    )
                    .await;
                    match r {
                        Ok(Ok((200, b))) => serde_json::from_str::<Value>(&b).ok(),
                        _ => None,
                    }
                };
                let (view, calls) = tokio::join!(get("/api/v1/cluster"), get("/api/v1/calls"));
                let (view, calls) = (view?, calls?);
                Some((
                    NodeView {
                        i,
                        healthy: view["healthy"].as_bool().unwrap_or(false),
                        applied: view["raft"]["applied"].as_u64().unwrap_or(0),
                        commit: view["raft"]["commit"].as_u64().unwrap_or(0),
                        calls: calls.as_array().cloned().unwrap_or_default(),
                    },
                    inc,
                ))
            });
        }
        let at = load.ms();
        let mut views = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(Some(v)) = r {
                views.push(v);
            }
        }
        self.rounds.fetch_add(1, Ordering::Relaxed);
        views.sort_by_key(|(v, _)| v.i);
        let mut claims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (v, inc) in &views {
            let name = &self.names[v.i];
            // A node restarted while this round ran reports its new run's indexes.
            if self.incarnation[v.i].load(Ordering::Relaxed) == *inc {
                let s = ProgressSample {
                    node: name.clone(),
                    at_ms: at,
                    incarnation: *inc,
                    applied: v.applied,
                    commit: v.commit,
                };
                let found = self.rollback.lock().unwrap().observe(&s);
                for x in found {
                    self.report(x);
                }
            }
            let mut by_agent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for c in &v.calls {
                let cid = c["call_id"].as_str().unwrap_or_default();
                if v.healthy && c["owner"].as_str() == Some(name) {
                    claims
                        .entry(cid.to_string())
                        .or_default()
                        .insert(name.clone());
                }
                if matches!(c["phase"].as_str(), Some("ringing" | "talking" | "held"))
                    && let Some(a) = c["agent"].as_str()
                {
                    by_agent.entry(a).or_default().push(cid);
                }
            }
            for (agent, calls) in by_agent {
                if calls.len() > 1 {
                    self.report(Violation::new(
                        "single_offer",
                        Some(at),
                        Some(name),
                        format!(
                            "agent {agent} rings or talks on {} calls at once: {}",
                            calls.len(),
                            calls.join(", ")
                        ),
                    ));
                }
            }
        }
        let double: BTreeMap<String, BTreeSet<String>> =
            claims.into_iter().filter(|(_, n)| n.len() > 1).collect();
        let mut prev = self.prev_double.lock().unwrap();
        // Two rounds in a row (half a second apart, far beyond a poll racing a handover):
        // two nodes both healthy and both serving the call.
        let persistent: BTreeMap<String, BTreeSet<String>> = double
            .iter()
            .filter(|(c, n)| prev.get(*c) == Some(n))
            .map(|(c, n)| (c.clone(), n.clone()))
            .collect();
        for v in single_owner::check_serving(at, &persistent) {
            self.report(v);
        }
        for (c, n) in &double {
            if !prev.contains_key(c) {
                self.transient_double.lock().unwrap().push(format!(
                    "t={at}ms call {c} claimed by {}",
                    n.iter().cloned().collect::<Vec<_>>().join(" and ")
                ));
            }
        }
        *prev = double;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_use_counts_each_store_and_leaves_the_ballast_out() {
        let dir = std::env::temp_dir().join(format!("lingxi-disk-use-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("raft/blobs")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::write(dir.join("raft/db"), vec![7u8; 64 << 10]).unwrap();
        std::fs::write(dir.join("raft/blobs/1"), vec![7u8; 32 << 10]).unwrap();
        std::fs::write(dir.join("state/db"), vec![7u8; 16 << 10]).unwrap();
        std::fs::write(dir.join("chaos-ballast"), vec![7u8; 256 << 10]).unwrap();
        // A sparse file weighs what it allocates, not its length.
        std::fs::File::create(dir.join("state/sparse"))
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let (total, by) = disk_use(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(by.keys().collect::<Vec<_>>(), ["raft", "state"], "{by:?}");
        assert!(by["raft"] >= 96 << 10 && by["raft"] < 160 << 10, "{by:?}");
        assert!(by["state"] >= 16 << 10 && by["state"] < 1 << 20, "{by:?}");
        assert_eq!(total, by["raft"] + by["state"]);
    }
}
