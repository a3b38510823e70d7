//! In-process clusters: the in-memory network (links cut at will) and real TCP on loopback.
//! Short ticks; every wait polls up to a generous deadline, never a tight timing.

use super::*;
use crate::{Command, MemStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn config(id: u64, voters: &[u64]) -> RaftConfig {
    RaftConfig {
        id,
        initial_voters: voters.to_vec(),
        peers: BTreeMap::new(),
        tick: Duration::from_millis(10),
        election_tick: 20,
        heartbeat_tick: 3,
        snapshot_every: 1000,
        keep_entries: 100,
        propose_timeout: Duration::from_secs(2),
        max_batch: 64,
    }
}

fn agent(n: u64) -> Command {
    Command::UpsertAgent {
        id: format!("a{n}"),
        name: format!("Agent {n}"),
        ha1: "0".repeat(32),
        skills: BTreeMap::new(),
        at_ms: n,
    }
}

fn start(net: &MemNetwork, cfg: RaftConfig, storage: RaftStorage) -> RaftLog {
    let (transport, inbox) = net.join(cfg.id);
    RaftLog::open(
        cfg,
        storage,
        Arc::new(MemStore::default()),
        transport,
        inbox,
    )
    .unwrap()
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A leader that every node in `nodes` recognises.
async fn leader(nodes: &[&RaftLog]) -> u64 {
    let mut found = 0;
    wait_for("a leader all agree on", || {
        let leaders: Vec<Option<u64>> = nodes.iter().map(|n| n.status().leader).collect();
        match leaders[0] {
            Some(l) if leaders.iter().all(|x| *x == Some(l)) => {
                found = l;
                nodes
                    .iter()
                    .any(|n| n.id() == l && n.status().role == RaftRole::Leader)
            }
            _ => false,
        }
    })
    .await;
    found
}

/// Proposes an idempotent command, retrying while leadership settles.
async fn propose_ok(node: &RaftLog, cmd: Command) {
    for _ in 0..20 {
        match node.propose(cmd.clone()).await {
            Ok(_) => return,
            Err(crate::ClusterError::Stopped) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("proposal refused: {e}"),
        }
    }
    panic!("proposal never committed on node {}", node.id());
}

fn sm_json(n: &RaftLog) -> String {
    n.read(|sm| serde_json::to_string(sm).unwrap())
}

/// Waits until every node applied the same entries, then compares their state machines.
async fn converge(nodes: &[&RaftLog]) {
    let statuses = || {
        nodes
            .iter()
            .map(|n| format!("{:?}", n.status()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    wait_for("nodes to apply the same index", || {
        let applied: Vec<u64> = nodes.iter().map(|n| n.status().applied).collect();
        let commit = nodes.iter().map(|n| n.status().commit).max().unwrap();
        applied.iter().all(|a| *a == applied[0] && *a >= commit)
            && nodes.iter().all(|n| sm_json(n) == sm_json(nodes[0]))
            || {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not converged:\n{}",
                    statuses()
                );
                false
            }
    })
    .await;
}

fn agents(n: &RaftLog) -> usize {
    n.read(|sm| sm.agents().len())
}

#[tokio::test]
async fn three_nodes_elect_replicate_and_agree() {
    let net = MemNetwork::new();
    let nodes: Vec<RaftLog> = (1..=3)
        .map(|id| start(&net, config(id, &[1, 2, 3]), RaftStorage::memory()))
        .collect();
    let all: Vec<&RaftLog> = nodes.iter().collect();
    let l = leader(&all).await;
    let follower = nodes.iter().find(|n| n.id() != l).unwrap().clone();
    let mut applied = follower.subscribe();

    // Proposals from every node at once: batched on the leader, forwarded by followers.
    let mut tasks = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        for i in 0..30u64 {
            let node = node.clone();
            let n = k as u64 * 100 + i;
            tasks.push(tokio::spawn(
                async move { propose_ok(&node, agent(n)).await },
            ));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Each proposal gets its own answer, refusals included, forwarded or not.
    let refused = follower
        .propose(Command::RemoveAgent {
            id: "nobody".into(),
        })
        .await;
    assert!(
        matches!(refused, Err(crate::ClusterError::UnknownAgent { .. })),
        "{refused:?}"
    );
    converge(&all).await;
    assert_eq!(agents(&nodes[0]), 90);
    let mut seen = 0;
    while let Ok(a) = applied.try_recv() {
        assert!(a.index / SUB_INDEX <= follower.status().applied);
        seen += a.events.len();
    }
    assert!(
        seen >= 90,
        "the follower broadcast what it applied ({seen})"
    );
    let s = follower.status();
    assert_eq!(s.voters, vec![1, 2, 3]);
    assert_eq!(s.leader, Some(l));
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn cut_off_leader_is_replaced_and_cannot_commit() {
    let net = MemNetwork::new();
    let nodes: Vec<RaftLog> = (1..=3)
        .map(|id| start(&net, config(id, &[1, 2, 3]), RaftStorage::memory()))
        .collect();
    let all: Vec<&RaftLog> = nodes.iter().collect();
    let old = leader(&all).await;
    propose_ok(&nodes[0], agent(1)).await;

    net.isolate(old);
    let old_node = nodes.iter().find(|n| n.id() == old).unwrap();
    let rest: Vec<&RaftLog> = nodes.iter().filter(|n| n.id() != old).collect();
    let new = leader(&rest).await;
    assert_ne!(new, old);
    let lost = old_node.propose(agent(666)).await;
    assert!(
        lost.is_err(),
        "a leader cut off from the majority committed"
    );
    propose_ok(rest[0], agent(2)).await;
    propose_ok(rest[1], agent(3)).await;

    net.heal();
    converge(&all).await;
    assert_eq!(agents(old_node), 3);
    assert!(old_node.read(|sm| sm.agent_by_id("a666").is_none()));
    assert_eq!(old_node.status().leader, Some(new));
    for n in &nodes {
        n.shutdown().await;
    }
}

/// The lease is the leader's word, not what a node happens to hear: a follower that the
/// leader cannot reach (one-way cut) still hears the other follower, yet loses its lease;
/// a cut-off leader loses its own; both get it back when the network heals.
#[tokio::test]
async fn lease_needs_the_leaders_confirmation() {
    let net = MemNetwork::new();
    let nodes: Vec<RaftLog> = (1..=3)
        .map(|id| start(&net, config(id, &[1, 2, 3]), RaftStorage::memory()))
        .collect();
    let all: Vec<&RaftLog> = nodes.iter().collect();
    let l = leader(&all).await;
    propose_ok(&nodes[0], agent(1)).await;
    wait_for("every node holds the lease", || {
        nodes.iter().all(|n| n.holds_lease())
    })
    .await;
    let lease = Duration::from_millis(10 * 20);
    assert!(nodes.iter().all(|n| n.lease_remaining() <= lease));

    let f = nodes.iter().find(|n| n.id() != l).unwrap();
    net.cut_one_way(l, f.id());
    wait_for("the unreachable follower loses its lease", || {
        !f.holds_lease()
    })
    .await;
    let others: Vec<&RaftLog> = nodes.iter().filter(|n| n.id() != f.id()).collect();
    wait_for("the others keep theirs", || {
        others.iter().all(|n| n.holds_lease())
    })
    .await;
    net.heal();
    wait_for("the follower gets it back", || f.holds_lease()).await;

    net.isolate(l);
    let old = nodes.iter().find(|n| n.id() == l).unwrap();
    wait_for("a cut-off leader loses its lease", || !old.holds_lease()).await;
    net.heal();
    wait_for("every node holds the lease again", || {
        nodes.iter().all(|n| n.holds_lease())
    })
    .await;
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn node_restarted_from_its_sled_dir_catches_up() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let net = MemNetwork::new();
    let cfg = |id| RaftConfig {
        snapshot_every: 8,
        keep_entries: 2,
        ..config(id, &[1, 2, 3])
    };
    let mut nodes: Vec<RaftLog> = (1..=3)
        .map(|id| {
            let storage = RaftStorage::open(dirs[id as usize - 1].path()).unwrap();
            start(&net, cfg(id), storage)
        })
        .collect();
    let l = leader(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..20 {
        propose_ok(&nodes[(i % 3) as usize], agent(i)).await;
    }
    converge(&nodes.iter().collect::<Vec<_>>()).await;

    // Stop a follower; the other two go on.
    let f = nodes.iter().position(|n| n.id() != l).unwrap();
    let fid = nodes[f].id();
    let stopped = nodes.remove(f);
    stopped.shutdown().await;
    drop(stopped);
    for i in 20..40 {
        propose_ok(&nodes[(i % 2) as usize], agent(i)).await;
    }

    // Back from its directory: the state it had is there at once, the rest follows.
    let storage = RaftStorage::open(dirs[fid as usize - 1].path()).unwrap();
    let back = start(&net, cfg(fid), storage);
    assert!(agents(&back) >= 20, "restored {} agents", agents(&back));
    nodes.push(back);
    converge(&nodes.iter().collect::<Vec<_>>()).await;
    assert_eq!(agents(&nodes[2]), 40);
    assert!(nodes[2].status().snapshot_index > 1, "snapshots were taken");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn node_whose_disk_runs_low_fails_stop_and_comes_back_intact() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let net = MemNetwork::new();
    let storages: Vec<RaftStorage> = dirs
        .iter()
        .map(|d| RaftStorage::open(d.path()).unwrap())
        .collect();
    let mut nodes: Vec<RaftLog> = (1..=3)
        .map(|id| {
            start(
                &net,
                config(id, &[1, 2, 3]),
                storages[id as usize - 1].clone(),
            )
        })
        .collect();
    let l = leader(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..5 {
        propose_ok(&nodes[(i % 3) as usize], agent(i)).await;
    }
    converge(&nodes.iter().collect::<Vec<_>>()).await;

    // A follower's disk "fills": a reserve beyond what is free makes its next write refuse.
    let f = nodes.iter().position(|n| n.id() != l).unwrap();
    let fid = nodes[f].id();
    let dir = dirs[fid as usize - 1].path();
    let free_mb = crate::free_bytes(dir).unwrap() / (1024 * 1024);
    storages[fid as usize - 1].set_guard(crate::SpaceGuard::new(dir, free_mb + 1024));
    drop(storages); // the nodes hold their own handles; sled unlocks when the last goes
    let others: Vec<usize> = (0..3).filter(|&i| i != f).collect();
    for i in 5..10 {
        propose_ok(&nodes[others[(i % 2) as usize]], agent(i)).await;
    }
    let why = tokio::time::timeout(Duration::from_secs(10), nodes[f].failed())
        .await
        .expect("the node with a low disk fails stop");
    assert!(why.contains("disk nearly full"), "{why}");
    assert!(why.contains(&dir.display().to_string()), "{why}");
    assert!(!nodes[f].holds_lease(), "a failed node holds no lease");

    // Space is back: restarted from the same directory, it opens cleanly and catches up.
    let stopped = nodes.remove(f);
    stopped.shutdown().await;
    drop(stopped);
    let storage = RaftStorage::open(dir).expect("the replica is readable after the refusal");
    nodes.push(start(&net, config(fid, &[1, 2, 3]), storage));
    propose_ok(&nodes[0], agent(10)).await;
    converge(&nodes.iter().collect::<Vec<_>>()).await;
    assert_eq!(agents(&nodes[2]), 11);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[test]
fn storage_that_lost_what_it_had_synced_refuses_to_open() {
    use ::raft::prelude::{Entry, HardState};
    let dir = tempfile::tempdir().unwrap();
    let raft_dir = dir.path().join("raft");
    {
        let s = RaftStorage::open(&raft_dir).unwrap();
        let ents: Vec<Entry> = (1..=5)
            .map(|i| {
                let mut e = Entry::default();
                e.index = i;
                e.term = 2;
                e
            })
            .collect();
        s.append(&ents).unwrap();
        let mut hs = HardState::default();
        hs.term = 2;
        hs.vote = 1;
        hs.commit = 5;
        s.set_hardstate(hs).unwrap();
        s.sync().unwrap();
    }
    // Reopened as it was: fine, and it says what it holds.
    let s = RaftStorage::open(&raft_dir).expect("intact storage opens");
    assert_eq!((s.hard_state().commit, s.last()), (5, 5));
    drop(s);
    // sled's files gone (or zeroed, which sled reads as empty): the marker stays with the
    // directory, and the node must not start empty and bootstrap a new cluster.
    for entry in std::fs::read_dir(&raft_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().is_some_and(|n| n != "lingxi-durable") {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    let err = match RaftStorage::open(&raft_dir) {
        Ok(_) => panic!("storage that lost its log opened"),
        Err(e) => e,
    };
    assert!(err.is_damage(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("commit 5") && text.contains("commit 0"),
        "{text}"
    );
}

#[tokio::test]
async fn node_added_later_catches_up_from_a_snapshot() {
    let net = MemNetwork::new();
    let cfg = |id, voters: &[u64]| RaftConfig {
        snapshot_every: 5,
        keep_entries: 0,
        ..config(id, voters)
    };
    let storages: Vec<RaftStorage> = (0..3).map(|_| RaftStorage::memory()).collect();
    let mut nodes: Vec<RaftLog> = (1..=3)
        .map(|id| start(&net, cfg(id, &[1, 2, 3]), storages[id as usize - 1].clone()))
        .collect();
    leader(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..30 {
        propose_ok(&nodes[(i % 3) as usize], agent(i)).await;
    }
    converge(&nodes.iter().collect::<Vec<_>>()).await;
    assert!(
        storages.iter().all(|s| s.first() > 2),
        "logs were compacted"
    );

    let newcomer = start(&net, cfg(4, &[]), RaftStorage::memory());
    assert_eq!(newcomer.status().voters, Vec::<u64>::new());
    nodes[1].add_node(4, "mem:4").await.unwrap();
    nodes.push(newcomer);
    converge(&nodes.iter().collect::<Vec<_>>()).await;
    let s = nodes[3].status();
    assert_eq!(s.voters, vec![1, 2, 3, 4]);
    assert!(s.snapshot_index > 1, "caught up from a snapshot: {s:?}");
    assert_eq!(agents(&nodes[3]), 30);
    // The new member proposes like any other.
    propose_ok(&nodes[3], agent(99)).await;
    converge(&nodes.iter().collect::<Vec<_>>()).await;
    assert_eq!(agents(&nodes[0]), 31);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn removed_node_stops_and_the_rest_go_on() {
    let net = MemNetwork::new();
    let nodes: Vec<RaftLog> = (1..=3)
        .map(|id| start(&net, config(id, &[1, 2, 3]), RaftStorage::memory()))
        .collect();
    let l = leader(&nodes.iter().collect::<Vec<_>>()).await;
    propose_ok(&nodes[0], agent(1)).await;
    let gone = nodes.iter().find(|n| n.id() != l).unwrap().clone();
    let rest: Vec<&RaftLog> = nodes.iter().filter(|n| n.id() != gone.id()).collect();

    // Asked on the node being removed: forwarded to the leader like a proposal.
    gone.remove_node(gone.id()).await.unwrap();
    wait_for("the removed node to stop", || gone.status().removed).await;
    assert!(matches!(
        gone.propose(agent(2)).await,
        Err(crate::ClusterError::Stopped)
    ));
    wait_for("the others to drop it", || {
        rest.iter().all(|n| !n.status().voters.contains(&gone.id()))
    })
    .await;
    propose_ok(rest[0], agent(3)).await;
    propose_ok(rest[1], agent(4)).await;
    converge(&rest).await;
    assert_eq!(agents(rest[0]), 3);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn three_nodes_over_tcp_on_loopback() {
    let storages: Vec<RaftStorage> = (0..3).map(|_| RaftStorage::memory()).collect();
    let stops: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
    let bind = |id: u64, addr: std::net::SocketAddr, stop: CancellationToken| async move {
        let (tx, rx) = mpsc::channel(4096);
        // Retried: a port given up by a stopped node may take a moment to be free.
        for _ in 0..50 {
            match TcpTransport::bind(id, addr, tx.clone(), TcpConfig::default(), stop.clone()).await
            {
                Ok(t) => return (t, rx),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!("cannot bind {addr}");
    };
    let mut transports = Vec::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=3u64 {
        let (t, rx) = bind(
            id,
            "127.0.0.1:0".parse().unwrap(),
            stops[id as usize - 1].clone(),
        )
        .await;
        addrs.insert(id, t.local_addr().to_string());
        transports.push((t, Some(rx)));
    }
    let open = |id: u64, transport: Arc<TcpTransport>, inbox, storage| {
        let cfg = RaftConfig {
            peers: addrs.clone(),
            ..config(id, &[1, 2, 3])
        };
        RaftLog::open(
            cfg,
            storage,
            Arc::new(MemStore::default()),
            transport,
            inbox,
        )
        .unwrap()
    };
    let mut nodes: Vec<RaftLog> = (0..3)
        .map(|i| {
            let (t, rx) = &mut transports[i];
            open(
                i as u64 + 1,
                t.clone(),
                rx.take().unwrap(),
                storages[i].clone(),
            )
        })
        .collect();
    let l = leader(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..20 {
        propose_ok(&nodes[(i % 3) as usize], agent(i)).await;
    }
    converge(&nodes.iter().collect::<Vec<_>>()).await;
    assert_eq!(agents(&nodes[0]), 20);

    // A follower goes away, sockets and all; the others keep committing, then it comes
    // back on the same address (its log kept in `storages`) and they reconnect to it.
    let f = nodes.iter().position(|n| n.id() != l).unwrap();
    let fid = nodes[f].id();
    let old = nodes.remove(f);
    old.shutdown().await;
    drop(old);
    stops[fid as usize - 1].cancel();
    for i in 20..30 {
        propose_ok(&nodes[(i % 2) as usize], agent(i)).await;
    }
    let addr = addrs[&fid].parse().unwrap();
    let (t, rx) = bind(fid, addr, CancellationToken::new()).await;
    let back = open(fid, t, rx, storages[fid as usize - 1].clone());
    nodes.push(back);
    converge(&nodes.iter().collect::<Vec<_>>()).await;
    assert_eq!(agents(&nodes[2]), 30);
    for n in &nodes {
        n.shutdown().await;
    }
    for s in &stops {
        s.cancel();
    }
}

#[test]
fn frames_round_trip() {
    let mut m = ::raft::prelude::Message::default();
    m.to = 2;
    m.from = 1;
    m.term = 7;
    m.set_msg_type(::raft::prelude::MessageType::MsgHeartbeat);
    let mut out = Vec::new();
    encode_frame(&Envelope::Raft(Box::new(m.clone())), &mut out).unwrap();
    let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(len, out.len() - 4);
    match decode_frame(out[4], &out[5..]).unwrap() {
        Envelope::Raft(got) => assert_eq!(*got, m),
        other => panic!("{other:?}"),
    }
    assert!(decode_frame(9, b"").is_err());
    assert!(decode_frame(1, b"\xff\xff\xff").is_err());
}
