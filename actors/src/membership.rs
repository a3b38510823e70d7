//! Cluster membership as the switch sees it: announcing this node, stopping its calls when it
//! is cut off from the majority (its lease ran out), and, on the leader, declaring silent nodes
//! dead so their calls move to live ones.
//!
//! The timing rule that keeps a call from being served by two nodes: a node serves only while
//! it holds a lease, renewed by a ReadIndex round trip with the leader and lasting
//! `cluster.election_ticks × tick_ms` from when it was asked; without it, it stops its calls.
//! The leader heard from the node after that ask, so it declares the node dead only after
//! `cluster.failure_detection_ms` of silence, which validation requires to be longer than the
//! lease; a newer leader was elected after the confirmation and also waits that long.

use crate::call::CallMsg;
use crate::switch::{Switch, now_ms};
use lingxi_cluster::Command;
use lingxi_cluster::model::Member;
use lingxi_cluster::raft::RaftRole;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

impl Switch {
    /// Announces this node to the cluster (on start and after it was declared dead), with the
    /// addresses peers and tools use to reach it.
    pub async fn announce(
        &self,
        sip_udp: Option<SocketAddr>,
        sip_tcp: Option<SocketAddr>,
        http: Option<SocketAddr>,
    ) -> Result<(), crate::ActorError> {
        let member = Member {
            node: self.node_id.clone(),
            raft_id: self.log.raft_status().map_or(0, |s| s.id),
            sip_udp,
            sip_tcp,
            http,
            alive: true,
            since_ms: now_ms(),
        };
        *self.addresses.lock() = (sip_udp, sip_tcp, http);
        self.log.propose(Command::MemberUp(member)).await?;
        Ok(())
    }

    /// [`Switch::announce`], then takes back the calls still recorded as this node's (it
    /// restarted before anyone declared it dead).
    pub async fn announce_and_resume(
        self: &Arc<Self>,
        sip_udp: Option<SocketAddr>,
        sip_tcp: Option<SocketAddr>,
        http: Option<SocketAddr>,
    ) -> Result<(), crate::ActorError> {
        self.announce(sip_udp, sip_tcp, http).await?;
        tokio::spawn(self.clone().resume_orphans());
        Ok(())
    }

    /// Whether this node is cut off from the majority and serves no calls.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Stops every call this node runs, silently: the majority will resume them elsewhere.
    pub(crate) fn fence(&self) {
        if self.fenced.swap(true, Ordering::AcqRel) {
            return;
        }
        self.fence_epoch.fetch_add(1, Ordering::AcqRel);
        self.media.gate().open_until(None);
        tracing::warn!(node = %self.node_id, "cut off from the majority: stopping this node's calls (they resume on a live node)");
        metrics::counter!("lingxi_fenced_total").increment(1);
        let actors: Vec<_> = self.calls.iter().map(|e| e.value().clone()).collect();
        for a in actors {
            let _ = a.cast(CallMsg::Fence);
        }
    }
}

/// Placement: redirect new callers to the least loaded live member when this node carries
/// more than `cluster.placement_slack` calls beyond it.
fn place(sw: &Switch) {
    let slack = sw.config.cluster.placement_slack;
    let target = if slack == 0 {
        None
    } else {
        sw.log.read(|sm| {
            let mut load: std::collections::BTreeMap<&str, usize> = sm
                .members()
                .values()
                .filter(|m| m.alive && m.sip_udp.is_some())
                .map(|m| (m.node.as_str(), 0))
                .collect();
            for c in sm.calls().values() {
                if let Some(n) = load.get_mut(c.owner.as_str()) {
                    *n += 1;
                }
            }
            let mine = *load.get(sw.node_id.as_str())?;
            let (least, n) = load.iter().min_by_key(|(name, n)| (**n, **name))?;
            (mine > n + slack)
                .then(|| sm.members().get(*least).and_then(|m| m.sip_udp))
                .flatten()
        })
    };
    *sw.redirect_to.lock() = target;
}

/// Watches Raft liveness every tick: lease and fencing on every node, failure detection on
/// the leader. Runs only in cluster mode.
pub(crate) async fn watch(sw: Arc<Switch>) {
    let Some(raft) = sw.log.as_raft().cloned() else {
        return;
    };
    let c = &sw.config.cluster;
    let tick = Duration::from_millis(c.tick_ms.max(1));
    let lease = c.lease();
    let detect = Duration::from_millis(c.failure_detection_ms);
    let started = Instant::now();
    let mut leader_since: Option<Instant> = None;
    let mut declared: std::collections::HashMap<String, Instant> = Default::default();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sw.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let status = raft.status();
        let silence = raft.silence();
        // Media leaves this node only under a lease (packets queued while it was frozen or
        // cut off must not reach anyone once its calls may have moved).
        let gate = sw.media.gate();
        if sw.is_fenced() || status.removed {
            gate.open_until(None);
        } else {
            gate.open_until(raft.lease_until());
        }
        if status.removed {
            sw.fence();
            continue;
        }
        // Lease: the leader confirmed, in a round trip asked less than a lease ago, that it
        // still leads a majority, and this node has applied what was committed by then.
        if !raft.holds_lease() {
            // Give a new node time to hear its peers before judging it.
            if started.elapsed() > lease * 2 {
                sw.fence();
            }
            leader_since = None;
            continue;
        }
        // Declared dead by the majority (say, it cannot hear us though we hear it): stop.
        if sw
            .log
            .read(|sm| sm.members().get(&sw.node_id).is_some_and(|m| !m.alive))
        {
            sw.fence();
        }
        if sw.fenced.load(Ordering::Acquire) {
            // Back in touch with the majority: serve again once announced alive.
            let (udp, tcp, http) = *sw.addresses.lock();
            match sw.announce(udp, tcp, http).await {
                Ok(()) => {
                    sw.fenced.store(false, Ordering::Release);
                    // Calls stopped by the fence that nobody took over are still ours.
                    tokio::spawn(sw.clone().resume_orphans());
                    tracing::info!(node = %sw.node_id, "back in touch with the majority; serving again");
                }
                Err(e) => tracing::debug!(error = %e, "re-announcing failed; still fenced"),
            }
            continue;
        }
        place(&sw);
        if status.role != RaftRole::Leader {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        // Failure detection: members whose node has been silent too long.
        let suspects: Vec<String> = sw.log.read(|sm| {
            sm.members()
                .values()
                .filter(|m| m.alive && m.raft_id != status.id && m.raft_id != 0)
                .filter(|m| {
                    let quiet = silence
                        .get(&m.raft_id)
                        .copied()
                        .unwrap_or_else(|| since.elapsed());
                    quiet > detect && since.elapsed() > detect
                })
                .map(|m| m.node.clone())
                .collect()
        });
        for node in suspects {
            if declared
                .get(&node)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                continue;
            }
            declared.insert(node.clone(), Instant::now());
            tracing::warn!(dead = %node, "node silent beyond failure detection; moving its calls");
            metrics::counter!("lingxi_failovers_total").increment(1);
            if let Err(e) = sw
                .log
                .propose(Command::NodeDown {
                    node: node.clone(),
                    at_ms: now_ms(),
                })
                .await
            {
                tracing::warn!(dead = %node, error = %e, "declaring node dead failed");
            }
        }
    }
}
