//! Rebuilding a node whose storage is damaged (README: "Rebuilding a node whose storage is
//! damaged"): the damaged node refuses to start with exit code 65 and names its Raft
//! directory; removed under its old Raft id and started empty under a new one, it joins,
//! catches up from the leader's snapshot and serves, while a call on another node talks on.
//!
//! The damaged node (n3) owns no call: the call in conversation throughout is n1's
//! (failover of a dead owner's calls is t60's).
//!
//! Needs the binary: `cargo build -p lingxi-node` (./test.sh does it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use lingxi_tests::WAIT;
use lingxi_tests::cluster::{
    Cluster, ClusterCall as Call, FAILOVER_WAIT, START_WAIT, Talker, voters,
};
use serde_json::Value;

/// The node whose storage is damaged: n3.
const VICTIM: usize = 2;

/// n3's Raft id before the damage, and the new one it is rebuilt under (ids are never reused).
const OLD_ID: u64 = 3;
const NEW_ID: u64 = 4;

/// The exit code of a node whose storage is damaged (`node/src/main.rs`).
const EXIT_STORAGE_DAMAGED: i32 = 65;

/// Overwrites the middle third of every file in sled's directory `dir` (the data file `db`,
/// the snapshot file `snap.*`) with pseudo-random bytes, as a failing disk would; returns
/// what it damaged.
///
/// sled 0.34 reads its snapshot file (where each page lives) whole and checks its CRC on
/// open, so damage there always fails the open with `Corruption`. Damage to the data file
/// alone fails the open only when it hits a page still in use: sled takes a bad record in
/// the log for the torn end of a crashed write and recovers without it.
fn damage(dir: &Path) -> anyhow::Result<Vec<String>> {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let mut damaged = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !(name == "db" || name.starts_with("snap.")) {
            continue;
        }
        let len = std::fs::metadata(&path)?.len();
        let (from, n) = (len / 3, (len / 3).max(1));
        let garbage: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.seek(SeekFrom::Start(from))?;
        f.write_all(&garbage)?;
        f.sync_all()?;
        damaged.push(format!("{name}: bytes {from}..{} of {len}", from + n));
    }
    Ok(damaged)
}

/// Waits until every node in `idx` shows exactly `want` as voters.
async fn wait_voters(cl: &Cluster, idx: &[usize], want: &[u64]) -> anyhow::Result<()> {
    let r = lingxi_tests::wait_until(&format!("the voters to be {want:?}"), WAIT, || async {
        let mut all = true;
        for &i in idx {
            all &= voters(cl, i).await.is_ok_and(|v| v == want);
        }
        all
    })
    .await;
    if r.is_err() {
        let mut seen = Vec::new();
        for &i in idx {
            seen.push((cl.name(i).to_string(), voters(cl, i).await.ok()));
        }
        bail!("the voters are not {want:?} everywhere: {seen:?}");
    }
    Ok(())
}

/// The replicated state node `i` serves, for comparing replicas: its agents (as they are),
/// queues (without the time-dependent longest wait), live calls and the Call-IDs of its CDRs.
async fn replica(cl: &Cluster, i: usize) -> anyhow::Result<Value> {
    let get = |path: &'static str| async move {
        let (s, v) = cl.http_get(i, path).await?;
        ensure!(s == 200, "GET {path} on {}: {s} {v}", cl.name(i));
        Ok::<Value, anyhow::Error>(v)
    };
    let agents = get("/api/v1/agents").await?;
    let mut queues = get("/api/v1/queues").await?;
    for q in queues.as_array_mut().into_iter().flatten() {
        if let Some(q) = q.as_object_mut() {
            q.remove("longest_wait_secs");
        }
    }
    let calls = get("/api/v1/calls").await?;
    let cdrs: BTreeSet<String> = cl
        .cdrs(i)
        .await?
        .iter()
        .filter_map(|c| c["call_id"].as_str().map(str::to_string))
        .collect();
    Ok(serde_json::json!({
        "agents": agents,
        "queues": queues,
        "calls": calls,
        "cdrs": cdrs,
    }))
}

/// Moves `dir` to `<dir>.damaged`, kept for analysis.
fn move_aside(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut to = dir.as_os_str().to_owned();
    to.push(".damaged");
    let to = PathBuf::from(to);
    std::fs::rename(dir, &to)
        .with_context(|| format!("moving {} to {}", dir.display(), to.display()))?;
    Ok(to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_node_is_rebuilt_from_its_peers() -> anyhow::Result<()> {
    let mut cl = Cluster::start(3).await?;
    let r = rebuild(&mut cl).await;
    cl.finish(r)
}

async fn rebuild(cl: &mut Cluster) -> anyhow::Result<()> {
    // A call that completes while n3 is healthy: its CDR must come back to the rebuilt n3.
    let mut first = Call::establish(cl, 1, 0, "1001", "alice").await?;
    first.assert_media("the first call").await?;
    first.hang_up().await?;
    cl.wait_cdrs(VICTIM, &first.leg_a.call_id, WAIT).await?;

    // sled writes its snapshot file when it opens an existing database: n3 is restarted once
    // (as for an upgrade), so its storage holds what a node that has been running a while
    // holds.
    cl.kill(VICTIM);
    cl.restart(VICTIM).await?;
    // (If n3 led, the others elected a leader meanwhile: wait until every node serves.)
    cl.wait_ready(&[0, 1, VICTIM], START_WAIT).await?;
    let raft_dir = cl.nodes[VICTIM].data_dir.join("raft");
    let state_dir = cl.nodes[VICTIM].data_dir.join("state");

    // The call that talks throughout: owned by n1 (it received it), the agent through n2.
    let long = Call::establish(cl, 1, 0, "1002", "bob").await?;
    ensure!(
        cl.rtp_owner(long.leg_a.remote_rtp()?) == Some(0),
        "n1 relays the long call"
    );
    let _talk_c = Talker::start(long.rtp_c.clone(), long.leg_a.remote_rtp()?);
    let _talk_a = Talker::start(long.rtp_a.clone(), long.leg_b.remote_rtp()?);

    // n3 dies and its disk damages its Raft storage.
    cl.kill(VICTIM);
    cl.wait_member(0, "n3", false, FAILOVER_WAIT).await?;
    let damaged = damage(&raft_dir)?;
    ensure!(
        damaged.iter().any(|d| d.starts_with("snap.")),
        "n3's Raft storage has a sled snapshot file to damage: {damaged:?}"
    );
    eprintln!("damaged n3's Raft storage: {damaged:?}");

    // Started again (as a service manager would), it refuses, says where and what to do.
    let before = cl.logs(VICTIM).len();
    cl.respawn(VICTIM)?;
    let status = cl.wait_exit(VICTIM, START_WAIT).await?;
    let said = cl.logs(VICTIM)[before..].to_string();
    ensure!(
        status.code() == Some(EXIT_STORAGE_DAMAGED),
        "n3 on damaged storage exits with {EXIT_STORAGE_DAMAGED}, got {status}: {said}"
    );
    ensure!(
        said.contains(&raft_dir.display().to_string())
            && said.contains("Rebuilding a node")
            && said.contains("重建")
            && said.contains(&format!("--id {OLD_ID}")),
        "n3's error names {} and the rebuild procedure: {said}",
        raft_dir.display()
    );
    eprintln!("n3 on damaged storage said:\n{said}");

    // Meanwhile the cluster goes on: a call completes without n3.
    let mut second = Call::establish(cl, 0, 1, "1003", "carol").await?;
    second.assert_media("a call while n3 is down").await?;
    second.hang_up().await?;
    cl.wait_cdrs(0, &second.leg_a.call_id, WAIT).await?;

    // The procedure. 1: remove the old id through a live member.
    let api1 = format!("http://{}", cl.http(0));
    let api2 = format!("http://{}", cl.http(1));
    let (ok, text) = cl
        .cli(&[
            "cluster",
            "leave",
            "--api",
            &api1,
            "--id",
            &OLD_ID.to_string(),
        ])
        .await?;
    ensure!(ok, "lingxi cluster leave --id {OLD_ID}: {text}");
    wait_voters(cl, &[0, 1], &[1, 2]).await?;

    // 2: move the damaged storage aside, kept for analysis.
    let kept_raft = move_aside(&raft_dir)?;
    let kept_state = move_aside(&state_dir)?;

    // 3: a new raft id, bootstrap = false; it waits to be added.
    cl.respawn_as(VICTIM, NEW_ID)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        cl.is_running(VICTIM),
        "the rebuilt n3 waits to be added instead of exiting: {}",
        cl.logs(VICTIM)
    );

    // 4: join it under the new id at its Raft address, through another live member.
    let addr = cl.raft_addr(VICTIM).to_string();
    let (ok, text) = cl
        .cli(&[
            "cluster",
            "join",
            "--api",
            &api2,
            "--id",
            &NEW_ID.to_string(),
            "--addr",
            &addr,
        ])
        .await?;
    ensure!(
        ok,
        "lingxi cluster join --id {NEW_ID} --addr {addr}: {text}"
    );

    // It catches up from the leader's snapshot and serves; the old id is gone.
    cl.wait_ready(&[0, 1, VICTIM], START_WAIT).await?;
    wait_voters(cl, &[0, 1, VICTIM], &[1, 2, NEW_ID]).await?;
    let (ok, text) = cl.cli(&["cluster", "status", "--api", &api1]).await?;
    eprintln!("lingxi cluster status after the rebuild:\n{text}");
    ensure!(ok, "lingxi cluster status: {text}");

    // Its state agrees with the others': agents, queues, the long call, every CDR.
    let r = lingxi_tests::wait_until(
        "the rebuilt n3 to serve the same state as n1 and n2",
        WAIT,
        || async {
            match (
                replica(cl, 0).await,
                replica(cl, 1).await,
                replica(cl, VICTIM).await,
            ) {
                (Ok(a), Ok(b), Ok(c)) => a == c && b == c,
                _ => false,
            }
        },
    )
    .await;
    if let Err(e) = r {
        bail!(
            "{e}: n1 {:#}\nn3 {:#}",
            replica(cl, 0).await.unwrap_or(Value::Null),
            replica(cl, VICTIM).await.unwrap_or(Value::Null)
        );
    }
    let seen = replica(cl, VICTIM).await?;
    for call_id in [&first.leg_a.call_id, &second.leg_a.call_id] {
        ensure!(
            seen["cdrs"]
                .as_array()
                .is_some_and(|c| c.iter().any(|id| id == call_id.as_str())),
            "the rebuilt n3 serves the CDR of {call_id}: {seen:#}"
        );
    }
    ensure!(
        seen["calls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["call_id"] == long.leg_a.call_id)),
        "the rebuilt n3 shows the long call: {seen:#}"
    );

    // The long call never noticed.
    long.assert_media("the long call after the rebuild").await?;

    // The rebuilt n3 serves a new call end to end.
    let mut via3 = Call::establish(cl, VICTIM, VICTIM, "1001", "dave").await?;
    ensure!(
        cl.rtp_owner(via3.leg_a.remote_rtp()?) == Some(VICTIM),
        "the rebuilt n3 relays the call it took"
    );
    ensure!(
        cl.call_owner(0, &via3.leg_a.call_id).await?.as_deref() == Some("n3"),
        "n1 sees the new call owned by n3"
    );
    via3.assert_media("a call through the rebuilt n3").await?;
    via3.hang_up().await?;
    for i in [0, 1, VICTIM] {
        let cdrs = cl.wait_cdrs(i, &via3.leg_a.call_id, WAIT).await?;
        ensure!(
            cdrs.len() == 1 && cdrs[0]["outcome"] == "call.completed",
            "{}: CDR of the call through n3: {cdrs:#?}",
            cl.name(i)
        );
    }

    drop((_talk_c, _talk_a));
    let mut long = long;
    long.assert_media("the long call at its end").await?;
    long.hang_up().await?;
    for i in [0, 1, VICTIM] {
        let cdrs = cl.wait_cdrs(i, &long.leg_a.call_id, WAIT).await?;
        ensure!(
            cdrs.len() == 1 && cdrs[0]["outcome"] == "call.completed",
            "{}: CDR of the long call: {cdrs:#?}",
            cl.name(i)
        );
    }

    // The damaged storage is still there for analysis.
    ensure!(
        kept_raft.join("db").is_file() && kept_state.is_dir(),
        "the damaged storage was kept in {} and {}",
        kept_raft.display(),
        kept_state.display()
    );
    Ok(())
}
