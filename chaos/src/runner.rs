//! Level 1 of the chaos plan (issue 4): a seeded run against real `lingxi` processes.
//!
//! [`run`] starts an N-node cluster on loopback with the `lingxi_tests::cluster` harness,
//! logs agents in, places calls at a steady seeded rate, injects the seeded fault schedule,
//! watches every node's API all along, then lets the calls end, waits for the cluster to
//! settle and checks the invariants against what the UAs saw, what the poller saw and what
//! every node stores. The result is a [`report::Report`].
//!
//! # Layout
//! - `schedule`: the seeded fault plan (kill/restart, freeze, partition, netem, clock,
//!   disk full, slow fsync).
//! - `host`: what clock, disk and fsync faults need around the nodes (libfaketime, a
//!   loop-mounted filesystem per data directory, an fsync interposer).
//! - `netem`: a frame-aware proxy that delays and drops Raft frames.
//! - `media`: an RTP endpoint that watches which node its packets come from.
//! - `load`: agents, callers and probes, and what they saw.
//! - `observe`: the poller of every node's API during the run.
//! - `checks`: the post-run checks (adapters to `lingxi_chaos::invariants`, plus the ones
//!   only real processes can show).
//! - `report`: the JSON report and its Markdown summary.

#[path = "runner/checks.rs"]
pub mod checks;
#[path = "runner/host.rs"]
pub mod host;
#[path = "runner/load.rs"]
pub mod load;
#[path = "runner/media.rs"]
pub mod media;
#[path = "runner/netem.rs"]
pub mod netem;
#[path = "runner/observe.rs"]
pub mod observe;
#[path = "runner/report.rs"]
pub mod report;
#[path = "runner/schedule.rs"]
pub mod schedule;

use anyhow::{Context as _, bail};
use checks::{Final, History};
use host::Host;
use lingxi_chaos::invariants::agreement::StateCheckpoint;
use lingxi_chaos::invariants::progress::{HealWindow, NodeReadiness};
use lingxi_chaos::invariants::{Digest, Violation};
use lingxi_cluster::model::Cdr;
use lingxi_tests::cluster::Cluster;
use load::{CallKind, CallPlan, Load};
use netem::{Impairment, NetemProxy, NetemState};
use observe::Observer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use report::{FaultRecord, Gaps, Report};
use schedule::{FaultKind, PlannedFault, ScheduleSpec};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Everything a run is parameterised by.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Nodes in the cluster (at least 3).
    pub nodes: usize,
    /// Length of the loaded part of the run.
    pub duration: Duration,
    /// Seed of the fault schedule and the call plan.
    pub seed: u64,
    /// Agents logged in (1001, 1002, ...; spread over the nodes).
    pub agents: usize,
    /// New load calls per second.
    pub rate: f64,
    /// Talk time once an agent answers, min..max.
    pub talk: (Duration, Duration),
    /// How long a caller waits for an agent before giving up.
    pub patience: Duration,
    /// Fault kinds to draw from (empty: no faults).
    pub faults: Vec<FaultKind>,
    /// No fault in the first part of the run.
    pub warmup: Duration,
    /// Every fault healed this long before the end.
    pub cooldown: Duration,
    /// Quiet time between a heal and the next fault, min..max.
    pub gap: (Duration, Duration),
    /// One uptime probe call this often.
    pub probe_interval: Duration,
    /// A probe counts as answered if the switch answers within this long.
    pub probe_timeout: Duration,
    /// After a heal, the healed node must answer a new call within this long.
    pub heal_bound: Duration,
    /// A call hit by a fault must move (and its caller be able to hang up) within this long.
    pub failover_window: Duration,
    /// How long to wait, after the load stops, for every call to end.
    pub drain_timeout: Duration,
    /// What clock, disk and fsync faults need around the nodes ([`Host::prepare`], before
    /// the runtime starts). `None`: those faults are skipped (and named in the report).
    pub host: Option<Arc<Host>>,
}

impl RunConfig {
    /// Defaults for `nodes` nodes, `duration` of load, `seed`: agents = 2 × nodes, load at
    /// about 70% of what the agents can take, the default fault kinds, generous bounds for a
    /// loaded two-core machine.
    pub fn new(nodes: usize, duration: Duration, seed: u64) -> RunConfig {
        let agents = nodes * 2;
        let talk = (Duration::from_secs(2), Duration::from_secs(8));
        // An agent is busy talk + ~1 s wrap-up + ring per call.
        let per_call = (talk.0 + talk.1).as_secs_f64() / 2.0 + 1.5;
        RunConfig {
            nodes,
            duration,
            seed,
            agents,
            rate: 0.7 * agents as f64 / per_call,
            talk,
            patience: Duration::from_secs(20),
            faults: FaultKind::DEFAULT.to_vec(),
            warmup: Duration::from_secs(5),
            cooldown: Duration::from_secs(5),
            gap: (Duration::from_secs(2), Duration::from_secs(5)),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(3),
            heal_bound: Duration::from_secs(20),
            failover_window: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(120),
            host: None,
        }
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let faults: Vec<&str> = self.faults.iter().map(|k| k.name()).collect();
        format!(
            "cargo run --release -p lingxi-chaos -- run --nodes {} --duration {}s --seed {} --agents {} --rate {:.3} --faults {}",
            self.nodes,
            self.duration.as_secs(),
            self.seed,
            self.agents,
            self.rate,
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(",")
            }
        )
    }

    /// The seeded fault schedule this run injects.
    pub fn schedule(&self) -> Vec<PlannedFault> {
        schedule::plan(&ScheduleSpec {
            seed: self.seed,
            nodes: self.nodes,
            duration_ms: self.duration.as_millis() as u64,
            warmup_ms: self.warmup.as_millis() as u64,
            cooldown_ms: self.cooldown.as_millis() as u64,
            gap_ms: (self.gap.0.as_millis() as u64, self.gap.1.as_millis() as u64),
            kinds: self.faults.clone(),
        })
    }
}

/// Fault kinds this run was asked for but cannot inject here, and why.
fn not_injected(cfg: &RunConfig) -> Vec<String> {
    [FaultKind::Clock, FaultKind::DiskFull, FaultKind::SlowFsync]
        .into_iter()
        .filter(|k| cfg.faults.contains(k))
        .filter_map(|k| {
            host_for(cfg.host.as_deref(), k)
                .err()
                .map(|why| format!("{k}: {why}"))
        })
        .collect()
}

/// The host, if faults of `kind` can be injected (kinds that need none always can).
fn host_for(host: Option<&Host>, kind: FaultKind) -> Result<Option<&Host>, String> {
    match (kind, host) {
        (FaultKind::Clock | FaultKind::DiskFull | FaultKind::SlowFsync, None) => {
            Err("the runner was started without its host set-up (Host::prepare)".into())
        }
        (_, Some(h)) => match h.unavailable(kind) {
            Some(why) => Err(why),
            None => Ok(Some(h)),
        },
        (_, None) => Ok(None),
    }
}

/// Runs one chaos run and returns its report (`invariants_held` says whether it passed). An
/// error means the run itself could not be carried out (the cluster did not start...).
pub async fn run(cfg: &RunConfig) -> anyhow::Result<Report> {
    if cfg.nodes < 3 {
        bail!("a chaos run needs at least 3 nodes (a majority must survive each fault)");
    }
    let started = Instant::now();
    let plan = cfg.schedule();
    say(&format!(
        "chaos: seed {}, {} nodes, {} agents, {:.2} calls/s for {:?}; {} faults planned",
        cfg.seed,
        cfg.nodes,
        cfg.agents,
        cfg.rate,
        cfg.duration,
        plan.len()
    ));
    let mut cl = Cluster::start(cfg.nodes)
        .await
        .context("starting the cluster")?;
    if let Some(h) = &cfg.host
        && plan.iter().any(|f| f.kind == FaultKind::DiskFull)
    {
        say("chaos: putting each node's data directory on its own filesystem (a restart each)");
        h.mount_data_dirs(&mut cl).await;
    }
    let netem = Arc::new(NetemState::default());
    let _proxies = if plan.iter().any(|f| f.kind == FaultKind::Netem) {
        say(
            "chaos: putting the netem proxy in front of each node's Raft listener (a restart each)",
        );
        replumb_netem(&mut cl, netem.clone()).await?
    } else {
        Vec::new()
    };
    create_agents(&cl, cfg.agents).await?;
    let n = cl.len();
    let names: Vec<String> = (0..n).map(|i| cl.name(i).to_string()).collect();
    let load = Arc::new(Load::new(
        (0..n).map(|i| cl.sip(i)).collect(),
        (0..n).map(|i| cl.http(i)).collect(),
        cl.nodes.iter().map(|p| p.rtp).collect(),
        cfg.failover_window,
    ));
    let mut agents = Vec::new();
    for k in 0..cfg.agents {
        let id = format!("{}", 1001 + k);
        agents.push(tokio::spawn(load::run_agent(
            load.clone(),
            id,
            k % n,
            cfg.seed.wrapping_add(k as u64),
        )));
    }
    for k in 0..cfg.agents {
        for i in 0..n {
            cl.wait_agent_state(
                i,
                &format!("{}", 1001 + k),
                "ready",
                Duration::from_secs(30),
            )
            .await
            .context("agents logging in")?;
        }
    }
    let base = load.ms();
    let end_ms = base + cfg.duration.as_millis() as u64;
    say(&format!("chaos: {} agents ready; load begins", cfg.agents));

    let observer = Arc::new(Observer::new(
        names.clone(),
        cl.nodes.iter().map(|p| p.data_dir.clone()).collect(),
    ));
    let stop_poll = Arc::new(AtomicBool::new(false));
    let poller = {
        let (obs, load, stop) = (observer.clone(), load.clone(), stop_poll.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + Duration::from_millis(500);
                obs.round(&load).await;
                tokio::time::sleep_until(next).await;
            }
        })
    };
    let heals: Heals = Arc::default();
    let faults_task = tokio::spawn(inject(
        cl,
        plan,
        base,
        load.clone(),
        observer.clone(),
        netem.clone(),
        heals.clone(),
        cfg.heal_bound,
        cfg.host.clone(),
    ));
    let callers = tokio::spawn(generate_load(cfg.clone(), load.clone(), base, end_ms));
    let probes = tokio::spawn(probe_uptime(cfg.clone(), load.clone(), end_ms));

    let (cl, faults) = faults_task.await.context("the fault injector panicked")?;
    let mut cl = cl;
    let probe_rounds = probes.await.context("the prober panicked")?;
    let call_tasks = callers.await.context("the load generator panicked")?;
    say(&format!(
        "chaos: load over at {:.1} s; waiting for {} calls to end",
        (load.ms() - base) as f64 / 1000.0,
        call_tasks.iter().filter(|h| !h.is_finished()).count()
    ));
    let drain_deadline = Instant::now() + cfg.drain_timeout;
    let mut violations: Vec<Violation> = Vec::new();
    for h in call_tasks {
        let abort = h.abort_handle();
        if tokio::time::timeout_at(drain_deadline, h).await.is_err() {
            abort.abort();
            violations.push(Violation::new(
                "no_call_lost",
                Some(load.ms()),
                None,
                "a caller was still in its call when the drain timed out".to_string(),
            ));
        }
    }
    let mut windows = Vec::new();
    let heal_list: Vec<_> = std::mem::take(&mut *heals.lock().unwrap());
    for (healed_at, h) in heal_list {
        let committed = h.await.ok().flatten();
        let interrupted = faults.iter().map(|f| f.at_ms).find(|t| *t > healed_at);
        windows.push(HealWindow {
            healed_at_ms: healed_at,
            committed_at_ms: committed,
            interrupted_at_ms: interrupted,
        });
    }
    load.stop_agents.store(true, Ordering::Relaxed);
    for a in agents {
        match tokio::time::timeout(Duration::from_secs(30), a).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => violations.push(Violation::new(
                "progress",
                Some(load.ms()),
                None,
                format!("an agent stopped working: {e:#}"),
            )),
            _ => {}
        }
    }
    stop_poll.store(true, Ordering::Relaxed);
    let _ = poller.await;
    say("chaos: settling the cluster and reading every node's records");
    for (i, name) in names.iter().enumerate() {
        if !cl.is_running(i) {
            violations.push(Violation::new(
                "progress",
                Some(load.ms()),
                Some(name),
                "not running at the end of the run".to_string(),
            ));
            let _ = cl.restart(i).await;
        }
    }
    let fin = settle_and_read(&cl, &load, &names).await;
    observer.weigh_data(true).await;

    let mut calls = load.calls.lock().unwrap().clone();
    let late = checks::reconcile(&mut calls, &fin);
    if late > 0 {
        say(&format!(
            "chaos: {late} hang-up(s) answered 481 on a retry; their CDRs say the caller's BYE ended them"
        ));
    }
    let legs = load.legs.lock().unwrap().clone();
    let hist = History {
        calls: &calls,
        legs: &legs,
        faults: &faults,
        names: &names,
        failover_window_ms: cfg.failover_window.as_millis() as u64,
    };
    let (found, counts) = checks::check_all(&hist, &fin);
    violations.extend(found);
    violations.extend(checks::check_heals(
        &windows,
        cfg.heal_bound.as_millis() as u64,
    ));
    violations.extend(load.violations.lock().unwrap().iter().cloned());
    violations.extend(observer.violations.lock().unwrap().iter().cloned());
    violations.sort_by_key(|v| v.at_ms.unwrap_or(u64::MAX));
    let mut report = build_report(
        cfg,
        &load,
        &observer,
        &netem,
        base,
        started,
        faults,
        &calls,
        &windows,
        probe_rounds,
        counts,
        violations,
    );
    report.calls = calls;
    report.legs = legs;
    if !report.invariants_held {
        cl.print_logs();
    }
    if let Some(h) = &cfg.host {
        h.release(&mut cl);
    }
    drop(cl);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    cfg: &RunConfig,
    load: &Load,
    observer: &Observer,
    netem: &NetemState,
    base: u64,
    started: Instant,
    faults: Vec<FaultRecord>,
    calls: &[load::CallRecord],
    windows: &[HealWindow],
    probe_rounds: (u64, u64),
    counts: checks::Counts,
    violations: Vec<Violation>,
) -> Report {
    let load_calls: Vec<&load::CallRecord> =
        calls.iter().filter(|c| c.kind == CallKind::Load).collect();
    let count =
        |f: &dyn Fn(&load::CallRecord) -> bool| load_calls.iter().filter(|c| f(c)).count() as u64;
    let gaps: Vec<u64> = load_calls
        .iter()
        .flat_map(|c| c.media.gaps_ms.iter().copied())
        .collect();
    let mut invariants: BTreeMap<&'static str, usize> =
        report::INVARIANTS.iter().map(|k| (*k, 0)).collect();
    for v in &violations {
        *invariants.entry(v.invariant).or_default() += 1;
    }
    let mut transient = observer.transient_double.lock().unwrap().clone();
    transient.truncate(20);
    let (probes, probes_ok) = probe_rounds;
    Report {
        seed: cfg.seed,
        nodes: cfg.nodes,
        agents: cfg.agents,
        duration_s: cfg.duration.as_secs_f64(),
        wall_s: started.elapsed().as_secs_f64(),
        replay: cfg.replay_command(),
        faults,
        faults_not_injected: not_injected(cfg),
        calls_placed: load_calls.len() as u64,
        calls_answered: count(&|c| c.answered_ms.is_some()),
        calls_agent_answered: count(&|c| c.agent.is_some()),
        calls_completed: count(&|c| c.agent.is_some() && c.end == load::CallEnd::CallerBye),
        calls_abandoned: count(&|c| c.agent.is_none() && c.end == load::CallEnd::CallerBye),
        calls_refused: count(&|c| c.status.is_some_and(|s| s >= 300)),
        calls_failed: count(&|c| c.status.is_none()),
        calls_resumed: counts.resumed,
        calls_lost: counts.lost,
        cdrs: counts.cdrs,
        cdrs_missing: counts.cdrs_missing,
        cdrs_duplicated: counts.cdrs_duplicated,
        failover_gap_ms: Gaps::of(gaps),
        new_call_uptime_pct: if probes == 0 {
            100.0
        } else {
            100.0 * probes_ok as f64 / probes as f64
        },
        probes,
        probes_answered: probes_ok,
        heal_to_new_call_ms: Gaps::of(
            windows
                .iter()
                .filter_map(|w| w.committed_at_ms.map(|c| c.saturating_sub(w.healed_at_ms)))
                .collect(),
        ),
        netem_frames_dropped: netem.dropped(),
        agent_recoveries: *load.agent_recoveries.lock().unwrap(),
        poll_rounds: observer.rounds.load(Ordering::Relaxed),
        data_dir_bytes: observer.disk_by_node(),
        transient_double_claims: transient,
        invariants_held: violations.is_empty(),
        invariants,
        violations: violations
            .into_iter()
            .map(|mut v| {
                v.at_ms = v.at_ms.map(|t| t.saturating_sub(base));
                v
            })
            .collect(),
        calls: Vec::new(),
        legs: Vec::new(),
    }
}

/// A progress line on stderr.
fn say(s: &str) {
    eprintln!("{s}");
}

/// Moves each node's Raft listener to a new port and puts a [`NetemProxy`] on the old one
/// (where the harness's proxy forwards), one node at a time so a majority always serves.
async fn replumb_netem(
    cl: &mut Cluster,
    state: Arc<NetemState>,
) -> anyhow::Result<Vec<NetemProxy>> {
    let mut proxies = Vec::new();
    for i in 0..cl.len() {
        let old = cl.nodes[i].raft_listen;
        let new_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let new = std::net::SocketAddr::from(([127, 0, 0, 1], new_port));
        let path = cl.nodes[i].config_path.clone();
        let text = std::fs::read_to_string(&path)?;
        let from = format!("listen = \"{old}\"");
        if text.matches(&from).count() != 1 {
            bail!(
                "{}: cannot find {from} to move the Raft listener",
                path.display()
            );
        }
        cl.kill(i);
        std::fs::write(&path, text.replace(&from, &format!("listen = \"{new}\"")))?;
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(old).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.with_context(|| format!("binding the netem proxy at {old}"))?;
        proxies.push(NetemProxy::start(
            listener,
            cl.nodes[i].raft_id,
            new,
            state.clone(),
        ));
        cl.restart(i)
            .await
            .with_context(|| format!("restarting {} behind the netem proxy", cl.name(i)))?;
    }
    Ok(proxies)
}

/// Agents beyond the harness's 1001–1003 are created through the API (skill `support`).
async fn create_agents(cl: &Cluster, agents: usize) -> anyhow::Result<()> {
    for k in 3..agents {
        let id = format!("{}", 1001 + k);
        let body = json!({ "id": id, "password": format!("pass{id}"), "skills": { "support": 5 } });
        let mut last = String::new();
        let mut ok = false;
        for _ in 0..20 {
            match cl.http_req(0, "POST", "/api/v1/agents", Some(&body)).await {
                Ok((s, _)) if (200..300).contains(&s) || s == 409 => {
                    ok = true;
                    break;
                }
                Ok((s, v)) => last = format!("{s} {v}"),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !ok {
            bail!("creating agent {id}: {last}");
        }
    }
    Ok(())
}

/// The process id of the node whose config is `config` (SIGSTOP needs it; the harness keeps
/// its `Child` private).
fn pid_of(config: &Path) -> Option<u32> {
    let want = config.as_os_str().to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmd.split(|b| *b == 0).any(|a| a == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// Sends `sig` (`STOP`, `CONT`) to `pid`.
fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed: {st}");
    }
    Ok(())
}

/// Probes of healed nodes: when each heal happened, and the probe (it returns when the
/// healed node answered a new call).
type Heals = Arc<std::sync::Mutex<Vec<(u64, JoinHandle<Option<u64>>)>>>;

/// Sleeps until `at_ms` on the load's clock.
async fn sleep_until_ms(load: &Load, at_ms: u64) {
    let now = load.ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// Sleeps until `at_ms`, meanwhile restarting (once a second at most, as systemd's
/// `Restart=on-failure` would) any node whose process exited on its own: a node whose
/// storage failed (disk full) exits so that it can be started again.
async fn sleep_supervising(cl: &mut Cluster, load: &Load, observer: &Observer, at_ms: u64) {
    loop {
        for i in 0..cl.len() {
            if !cl.is_running(i) {
                say(&format!(
                    "chaos: t={:.1}s {} exited on its own; restarting it (service manager)",
                    load.ms() as f64 / 1000.0,
                    cl.name(i)
                ));
                observer.incarnation[i].fetch_add(1, Ordering::Relaxed);
                if let Err(e) = cl.respawn(i) {
                    say(&format!("chaos: restarting {} failed: {e:#}", cl.name(i)));
                }
            }
        }
        let now = load.ms();
        if now >= at_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis((at_ms - now).min(1000))).await;
    }
}

/// Injects the schedule, one fault at a time; after each heal, starts a probe of the healed
/// node. Returns the cluster and what was injected.
#[allow(clippy::too_many_arguments)]
async fn inject(
    mut cl: Cluster,
    plan: Vec<PlannedFault>,
    base: u64,
    load: Arc<Load>,
    observer: Arc<Observer>,
    netem: Arc<NetemState>,
    heals: Heals,
    heal_bound: Duration,
    host: Option<Arc<Host>>,
) -> (Cluster, Vec<FaultRecord>) {
    let mut out = Vec::new();
    let mut earliest = 0;
    let mut heal_seq = 0u64;
    for f in plan {
        let planned = base + f.at_ms;
        sleep_supervising(&mut cl, &load, &observer, planned.max(earliest)).await;
        let i = f.node;
        let name = cl.name(i).to_string();
        let at_ms = load.ms();
        let mut error = None;
        let mut detail = match f.kind {
            FaultKind::Netem => format!(
                "delay {}+0..{} ms, loss {:.0}%",
                f.delay_ms,
                f.jitter_ms,
                f.loss * 100.0
            ),
            FaultKind::Clock => format!("wall clock {:+} s", f.clock_step_s),
            FaultKind::SlowFsync => format!("each fsync +{} ms", f.delay_ms),
            _ => String::new(),
        };
        let host = match host_for(host.as_deref(), f.kind) {
            Ok(h) => h,
            Err(why) => {
                say(&format!("chaos: {} of {name} skipped: {why}", f.kind));
                out.push(FaultRecord {
                    at_ms,
                    kind: f.kind,
                    node: name,
                    planned_at_ms: planned,
                    duration_ms: 0,
                    healed_at_ms: at_ms,
                    detail,
                    error: Some(format!("skipped: {why}")),
                    skipped: true,
                });
                continue;
            }
        };
        if let Some(m) = host.map(|h| h.mechanism(f.kind)).filter(|m| !m.is_empty()) {
            detail = format!("{detail} ({m})").trim_start().to_string();
        }
        say(&format!(
            "chaos: t={:.1}s {} {name} for {} ms {detail}",
            (at_ms - base) as f64 / 1000.0,
            f.kind,
            f.duration_ms
        ));
        let hold = Duration::from_millis(f.duration_ms);
        match f.kind {
            FaultKind::Kill => {
                load.down.lock().unwrap()[i] = true;
                cl.kill(i);
                tokio::time::sleep(hold).await;
                observer.incarnation[i].fetch_add(1, Ordering::Relaxed);
                let mut r = cl.restart(i).await;
                if r.is_err() && cl.is_running(i) {
                    r = cl.wait_ready(&[i], Duration::from_secs(30)).await;
                }
                if let Err(e) = r {
                    error = Some(format!("restart: {e:#}"));
                }
                // A node that did not come back stays skipped by clients (a later fault on
                // it restarts it again).
                load.down.lock().unwrap()[i] = !cl.is_running(i);
            }
            FaultKind::Freeze => match pid_of(&cl.nodes[i].config_path) {
                Some(pid) => {
                    load.down.lock().unwrap()[i] = true;
                    if let Err(e) = signal(pid, "STOP") {
                        error = Some(format!("{e:#}"));
                    }
                    tokio::time::sleep(hold).await;
                    if let Err(e) = signal(pid, "CONT") {
                        error = Some(format!("{e:#}"));
                    }
                    load.down.lock().unwrap()[i] = false;
                }
                None => error = Some("no process found for the node".into()),
            },
            FaultKind::Partition => {
                cl.cut(i);
                tokio::time::sleep(hold).await;
                cl.heal(i);
            }
            FaultKind::Netem => {
                let id = cl.nodes[i].raft_id;
                netem.set(
                    id,
                    Impairment {
                        delay_ms: f.delay_ms,
                        jitter_ms: f.jitter_ms,
                        loss: f.loss,
                    },
                );
                tokio::time::sleep(hold).await;
                netem.clear(id);
            }
            FaultKind::Clock | FaultKind::SlowFsync => {
                let h = host.expect("host_for gave one");
                let config = cl.nodes[i].config_path.clone();
                let set = |on: bool| {
                    if f.kind == FaultKind::Clock {
                        h.set_clock(&config, if on { f.clock_step_s } else { 0 })
                    } else {
                        h.set_fsync_delay(&config, if on { f.delay_ms } else { 0 })
                    }
                };
                match set(true) {
                    Ok(()) => {
                        tokio::time::sleep(hold).await;
                        if let Err(e) = set(false) {
                            error = Some(format!("healing: {e:#}"));
                        }
                    }
                    Err(e) => error = Some(format!("{e:#}")),
                }
            }
            FaultKind::DiskFull => {
                let h = host.expect("host_for gave one");
                let data = cl.nodes[i].data_dir.clone();
                match h.fill(&data).await {
                    Ok(taken) => {
                        detail = format!(
                            "ballast {} MiB, {} KiB left ({})",
                            taken >> 20,
                            h.free(&data).unwrap_or(0) >> 10,
                            h.mechanism(f.kind)
                        );
                        // The node fails stop when its disk runs low; its service manager
                        // restarts it, and it refuses to start until the space is back.
                        let until = load.ms() + hold.as_millis() as u64;
                        sleep_supervising(&mut cl, &load, &observer, until).await;
                    }
                    Err(e) => error = Some(format!("{e:#}")),
                }
                if let Err(e) = h.drain(&data) {
                    error = Some(format!("removing the ballast: {e:#}"));
                }
                // Space is back: a node down now starts at once (the service manager retries).
                sleep_supervising(&mut cl, &load, &observer, 0).await;
            }
        }
        let healed_at_ms = load.ms();
        if let Some(e) = &error {
            say(&format!("chaos: {} of {name}: {e}", f.kind));
        }
        heal_seq += 1;
        heals.lock().unwrap().push((
            healed_at_ms,
            tokio::spawn(probe_healed(
                load.clone(),
                i,
                1_000_000 + heal_seq * 1000,
                heal_bound,
            )),
        ));
        out.push(FaultRecord {
            at_ms,
            kind: f.kind,
            node: name,
            planned_at_ms: planned,
            duration_ms: healed_at_ms - at_ms,
            healed_at_ms,
            detail,
            error,
            skipped: false,
        });
        // The next fault waits for a quiet gap even if this one overran its plan.
        earliest = healed_at_ms + 2_000;
    }
    (cl, out)
}

/// New calls through the healed node until one is answered; returns when (ms), or `None`
/// if none was within 1.5 × `bound`.
async fn probe_healed(load: Arc<Load>, node: usize, seq0: u64, bound: Duration) -> Option<u64> {
    let deadline = Instant::now() + bound.mul_f64(1.5);
    let mut seq = seq0;
    while Instant::now() < deadline {
        let next = Instant::now() + Duration::from_millis(500);
        let rec = load::place_call(
            load.clone(),
            CallPlan {
                seq,
                kind: CallKind::HealProbe,
                entry: node,
                talk: Duration::ZERO,
                patience: Duration::ZERO,
                invite_timeout: Duration::from_secs(3),
            },
        )
        .await;
        seq += 1;
        let ok = rec.answered_ms;
        load.calls.lock().unwrap().push(rec);
        if ok.is_some() {
            return ok;
        }
        tokio::time::sleep_until(next).await;
    }
    None
}

/// Places load calls at the configured rate until `end_ms`; returns their tasks.
async fn generate_load(
    cfg: RunConfig,
    load: Arc<Load>,
    base: u64,
    end_ms: u64,
) -> Vec<JoinHandle<()>> {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x63_616c_6c73); // "calls"
    let mut tasks = Vec::new();
    let interval_ms = 1000.0 / cfg.rate.max(0.01);
    let (tmin, tmax) = (
        cfg.talk.0.as_millis() as u64,
        cfg.talk.1.as_millis().max(cfg.talk.0.as_millis() + 1) as u64,
    );
    for seq in 0.. {
        // Steady rate with a little jitter, so calls do not line up with faults.
        let at =
            base + (seq as f64 * interval_ms + rng.random_range(0.0..interval_ms * 0.5)) as u64;
        let entry = rng.random_range(0..load.sip.len());
        let talk = Duration::from_millis(rng.random_range(tmin..tmax));
        if at >= end_ms {
            break;
        }
        sleep_until_ms(&load, at).await;
        let plan = CallPlan {
            seq,
            kind: CallKind::Load,
            entry: load.pick_up(entry),
            talk,
            patience: cfg.patience,
            invite_timeout: Duration::from_secs(8),
        };
        let l = load.clone();
        tasks.push(tokio::spawn(async move {
            let rec = load::place_call(l.clone(), plan).await;
            l.calls.lock().unwrap().push(rec);
        }));
    }
    tasks
}

/// One probe call every `probe_interval` until `end_ms` (a second try on another node when
/// the first is refused or times out, as a SIP client with two servers would); returns
/// (probes, probes answered).
async fn probe_uptime(cfg: RunConfig, load: Arc<Load>, end_ms: u64) -> (u64, u64) {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x0070_726f_6265); // "probe"
    let (mut total, mut ok) = (0u64, 0u64);
    let mut seq = 0u64;
    while load.ms() < end_ms {
        let next = Instant::now() + cfg.probe_interval;
        let first = rng.random_range(0..load.sip.len());
        let deadline = Instant::now() + cfg.probe_timeout;
        let mut answered = false;
        for attempt in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(200) {
                break;
            }
            let entry = load.pick_up(first + attempt);
            let rec = load::place_call(
                load.clone(),
                CallPlan {
                    seq,
                    kind: CallKind::Probe,
                    entry,
                    talk: Duration::ZERO,
                    patience: Duration::ZERO,
                    invite_timeout: left,
                },
            )
            .await;
            seq += 1;
            answered = rec.answered_ms.is_some();
            load.calls.lock().unwrap().push(rec);
            if answered {
                break;
            }
        }
        total += 1;
        ok += u64::from(answered);
        tokio::time::sleep_until(next).await;
    }
    (total, ok)
}

/// One node's records at the end.
struct NodeEnd {
    applied: u64,
    healthy: bool,
    declared_dead: bool,
    cdrs: Vec<Cdr>,
    digest: u64,
    live: Vec<String>,
}

async fn read_node(cl: &Cluster, i: usize) -> anyhow::Result<NodeEnd> {
    let name = cl.name(i).to_string();
    let view = cl.cluster_view(i).await?;
    let applied = view["raft"]["applied"].as_u64().unwrap_or(0);
    let (s, cdrs) = cl.http_get(i, "/api/v1/cdrs?limit=100000").await?;
    if s != 200 {
        bail!("GET /api/v1/cdrs on {name}: {s}");
    }
    let (s, agents) = cl.http_get(i, "/api/v1/agents").await?;
    if s != 200 {
        bail!("GET /api/v1/agents on {name}: {s}");
    }
    let calls = cl.calls(i).await?;
    let again = cl.cluster_view(i).await?;
    if again["raft"]["applied"].as_u64().unwrap_or(0) != applied {
        bail!("{name} applied more while being read");
    }
    let mut agents = agents.as_array().cloned().unwrap_or_default();
    agents.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let digest = Digest::default()
        .bytes(cdrs.to_string().as_bytes())
        .bytes(Value::Array(agents).to_string().as_bytes())
        .value();
    let cdrs: Vec<Cdr> = serde_json::from_value(cdrs).context("reading CDRs")?;
    Ok(NodeEnd {
        applied,
        healthy: view["healthy"].as_bool().unwrap_or(false),
        declared_dead: lingxi_tests::cluster::member_alive(&view, &name) == Some(false),
        cdrs,
        digest,
        live: calls
            .iter()
            .filter_map(|c| c["call_id"].as_str().map(str::to_string))
            .collect(),
    })
}

/// Waits (up to a minute) until every node is at the same applied index with no live calls,
/// then reads what each holds.
async fn settle_and_read(cl: &Cluster, load: &Load, names: &[String]) -> Final {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ends: Vec<Option<NodeEnd>>;
    loop {
        ends = Vec::new();
        for i in 0..cl.len() {
            ends.push(read_node(cl, i).await.ok());
        }
        let all = ends.iter().all(Option::is_some);
        let same = all
            && ends
                .iter()
                .flatten()
                .all(|e| e.applied == ends[0].as_ref().expect("all").applied);
        let idle = ends.iter().flatten().all(|e| e.live.is_empty());
        if (same && idle) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let at_ms = load.ms();
    let mut fin = Final {
        at_ms,
        ..Default::default()
    };
    for (i, e) in ends.into_iter().enumerate() {
        let name = names[i].clone();
        match e {
            Some(e) => {
                fin.states.push(StateCheckpoint {
                    node: name.clone(),
                    at_ms,
                    raft_index: e.applied,
                    digest: e.digest,
                });
                fin.ready.push(NodeReadiness {
                    node: name.clone(),
                    serving: e.healthy,
                    declared_dead: e.declared_dead,
                });
                fin.live_at_end.extend(e.live);
                fin.stores.insert(name, e.cdrs);
            }
            None => fin.ready.push(NodeReadiness {
                node: name,
                serving: false,
                declared_dead: false,
            }),
        }
    }
    fin
}
