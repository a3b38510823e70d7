//! Membership: a node restarted from its data directory rejoins and catches up; a fourth
//! node is added and removed at runtime while calls go on.
//!
//! Needs the binary: `cargo build -p lingxi-node` (./test.sh does it).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use lingxi_tests::cluster::{
    Cluster, ClusterCall as Call, FAILOVER_WAIT, START_WAIT, Talker, view_members, voters,
};
use lingxi_tests::{Rtp, TestUa, WAIT};
use serde_json::json;

/// Call-IDs of the CDRs node `i` serves.
async fn cdr_ids(cl: &Cluster, i: usize) -> anyhow::Result<BTreeSet<String>> {
    Ok(cl
        .cdrs(i)
        .await?
        .iter()
        .filter_map(|c| c["call_id"].as_str().map(str::to_string))
        .collect())
}

/// Call-IDs of the live calls node `i` shows.
async fn call_ids(cl: &Cluster, i: usize) -> anyhow::Result<BTreeSet<String>> {
    Ok(cl
        .calls(i)
        .await?
        .iter()
        .filter_map(|c| c["call_id"].as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_rejoins_and_catches_up() -> anyhow::Result<()> {
    let mut cl = Cluster::start(3).await?;
    let r = restart_catch_up(&mut cl).await;
    cl.finish(r)
}

async fn restart_catch_up(cl: &mut Cluster) -> anyhow::Result<()> {
    // A call that completes while n3 is up.
    let mut first = Call::establish(cl, 2, 0, "1001", "frank").await?;
    first.assert_media("first call").await?;
    first.hang_up().await?;
    cl.wait_cdrs(2, &first.leg_a.call_id, WAIT).await?;

    // n3 dies; meanwhile one call completes and another is in conversation.
    cl.kill(2);
    cl.wait_member(0, "n3", false, FAILOVER_WAIT).await?;
    let mut second = Call::establish(cl, 1, 0, "1002", "grace").await?;
    second.hang_up().await?;
    let mut third = Call::establish(cl, 1, 0, "1003", "heidi").await?;
    third.assert_media("third call").await?;

    cl.restart(2).await?;
    let want_cdrs = cdr_ids(cl, 0).await?;
    ensure!(
        want_cdrs.contains(&first.leg_a.call_id) && want_cdrs.contains(&second.leg_a.call_id),
        "n1 has both CDRs: {want_cdrs:?}"
    );
    lingxi_tests::wait_until(
        "the restarted n3 to show the same CDRs and calls as n1",
        WAIT,
        || async {
            match (
                cdr_ids(cl, 2).await,
                call_ids(cl, 2).await,
                call_ids(cl, 0).await,
            ) {
                (Ok(c), Ok(live3), Ok(live1)) => {
                    c == want_cdrs && live3 == live1 && live3.contains(&third.leg_a.call_id)
                }
                _ => false,
            }
        },
    )
    .await
    .with_context(|| {
        format!("n3 lags: it shows CDRs and calls that differ from n1's (n1 CDRs {want_cdrs:?})")
    })?;
    // The ongoing call was not disturbed by the restart, and it ends normally.
    third.assert_media("third call after n3 rejoined").await?;
    third.hang_up().await?;
    let cdrs = cl.wait_cdrs(2, &third.leg_a.call_id, WAIT).await?;
    ensure!(
        cdrs.len() == 1 && cdrs[0]["outcome"] == "call.completed",
        "the restarted node serves the new CDR: {cdrs:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_a_member_under_load() -> anyhow::Result<()> {
    let mut cl = Cluster::start(3).await?;
    let r = add_remove(&mut cl).await;
    cl.finish(r)
}

async fn add_remove(cl: &mut Cluster) -> anyhow::Result<()> {
    // Load: one call in conversation the whole time, both sides talking.
    let long = Call::establish(cl, 1, 0, "1001", "ivan").await?;
    let _talk_c = Talker::start(long.rtp_c.clone(), long.leg_a.remote_rtp()?);
    let _talk_a = Talker::start(long.rtp_a.clone(), long.leg_b.remote_rtp()?);

    // n4 starts with bootstrap = false: it waits to be added.
    let n4 = cl.spawn_joiner().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        cl.is_running(n4),
        "a joiner waits for its addition instead of exiting"
    );
    let addr = cl.raft_addr(n4).to_string();
    let (s, v) = cl
        .http_req(
            0,
            "POST",
            "/api/v1/cluster/members",
            Some(&json!({ "id": 4, "addr": addr })),
        )
        .await?;
    ensure!(
        (200..300).contains(&s),
        "POST /api/v1/cluster/members: {s} {v}"
    );
    cl.wait_ready(&[0, 1, 2, n4], START_WAIT).await?;
    for i in [0, 1, 2, n4] {
        let vs = voters(cl, i).await?;
        ensure!(vs.len() == 4, "{} sees voters {vs:?}", cl.name(i));
    }
    let (ok, text) = cl
        .cli(&[
            "cluster",
            "status",
            "--api",
            &format!("http://{}", cl.http(0)),
        ])
        .await?;
    eprintln!("lingxi cluster status:\n{text}");
    ensure!(
        ok && text.contains("n4"),
        "`lingxi cluster status` shows n4: {text}"
    );
    let members = view_members(&cl.cluster_view(0).await?);
    ensure!(
        members
            .iter()
            .filter(|m| m["alive"] == true && m["voter"] == true)
            .count()
            == 4,
        "4 live voting members: {members:#?}"
    );
    long.assert_media("the long call while n4 joined").await?;

    // n4 serves: a call through it, to an agent registered through n3.
    let mut via4 = Call::establish(cl, 2, n4, "1002", "judy").await?;
    ensure!(
        cl.rtp_owner(via4.leg_a.remote_rtp()?) == Some(n4),
        "n4 owns the call it took"
    );
    via4.assert_media("call through n4").await?;
    via4.hang_up().await?;
    cl.wait_cdrs(0, &via4.leg_a.call_id, WAIT).await?;

    // Remove n4 (through another node's API): it stops serving; the rest go on.
    let (s, v) = cl
        .http_req(1, "DELETE", "/api/v1/cluster/members/4", None)
        .await?;
    ensure!(
        (200..300).contains(&s),
        "DELETE /api/v1/cluster/members/4: {s} {v}"
    );
    lingxi_tests::wait_until("the voters to be 1, 2, 3 everywhere", WAIT, || async {
        let mut all = true;
        for i in 0..3 {
            all &= voters(cl, i).await.is_ok_and(|v| v == vec![1, 2, 3]);
        }
        all
    })
    .await?;
    cl.wait_healthy(n4, false, WAIT)
        .await
        .context("a removed node reports itself not healthy")?;
    let rtp_x = Rtp::bind().await?;
    let mut refused = TestUa::new("mallory", "", cl.sip(n4)).await?;
    let out = refused.invite("8000", &rtp_x).await?;
    ensure!(
        out.response.status == Some(503),
        "a removed node refuses new calls with 503, got {}",
        out.response.raw
    );
    let mut after = Call::establish(cl, 0, 2, "1003", "ken").await?;
    after.assert_media("a call after n4 left").await?;
    after.hang_up().await?;
    cl.wait_cdrs(1, &after.leg_a.call_id, WAIT).await?;

    // The long call never noticed.
    drop((_talk_c, _talk_a));
    long.assert_media("the long call after n4 left").await?;
    let mut long = long;
    long.hang_up().await?;
    for i in 0..3 {
        let cdrs = cl.wait_cdrs(i, &long.leg_a.call_id, WAIT).await?;
        ensure!(
            cdrs.len() == 1 && cdrs[0]["outcome"] == "call.completed",
            "{}: CDR of the long call: {cdrs:#?}",
            cl.name(i)
        );
    }
    Ok(())
}
