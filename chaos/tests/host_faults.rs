//! A short seeded chaos run with the faults injected around a node rather than on its
//! network: wall-clock jumps (libfaketime), a disk that fills up (loop-mounted ext4 and a
//! growing ballast) and slow fsync (an interposer), with every invariant checked afterwards.
//!
//! Needs the binary (`cargo build -p lingxi-node`), root (mount), libfaketime and a C
//! compiler; ./test.sh installs them and sets `LINGXI_REQUIRE_HOST_FAULTS=1`, under which a
//! host that cannot inject them fails the test instead of skipping it.

#[allow(dead_code, unreachable_pub)]
#[path = "../src/runner.rs"]
mod runner;

use lingxi_tests::cluster::lingxi_binary;
use runner::RunConfig;
use runner::host::Host;
use runner::schedule::FaultKind;
use std::sync::Arc;
use std::time::Duration;

const KINDS: [FaultKind; 3] = [FaultKind::Clock, FaultKind::DiskFull, FaultKind::SlowFsync];

#[test]
fn short_run_with_clock_disk_and_fsync_faults_keeps_every_invariant() {
    let bin = lingxi_binary().expect("the lingxi binary (cargo build -p lingxi-node)");
    // Before the runtime: it points $LINGXI_BIN at the launcher.
    let host = Arc::new(Host::prepare(&bin, &KINDS));
    let missing: Vec<String> = KINDS
        .iter()
        .filter_map(|k| host.unavailable(*k).map(|why| format!("{k}: {why}")))
        .collect();
    if !missing.is_empty() {
        let why = missing.join("; ");
        assert!(
            std::env::var_os("LINGXI_REQUIRE_HOST_FAULTS").is_none(),
            "LINGXI_REQUIRE_HOST_FAULTS is set but this host cannot inject: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let mut cfg = RunConfig::new(3, Duration::from_secs(45), 0);
    cfg.faults = KINDS.to_vec();
    cfg.agents = 4;
    cfg.rate = 0.5;
    cfg.warmup = Duration::from_secs(3);
    cfg.cooldown = Duration::from_secs(3);
    cfg.seed = first_seed_with_every_kind(&mut cfg);
    cfg.host = Some(host.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt
        .block_on(runner::run(&cfg))
        .expect("the chaos run could not be carried out");
    drop(rt);
    drop(cfg);
    drop(host); // unmounts the nodes' filesystems
    let violations: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report.invariants_held,
        "{}\nviolations:\n{}",
        report.markdown(),
        violations.join("\n")
    );
    let injected: Vec<FaultKind> = report
        .faults
        .iter()
        .filter(|f| !f.skipped && f.error.is_none())
        .map(|f| f.kind)
        .collect();
    for k in KINDS {
        assert!(
            injected.contains(&k),
            "no {k} fault was injected:\n{}",
            report.markdown()
        );
    }
    assert!(report.calls_answered > 0, "{}", report.markdown());
    eprintln!("{}", report.markdown());
}

/// The first seed whose schedule (deterministic) has a fault of each kind, so the run
/// attacks with all three.
fn first_seed_with_every_kind(cfg: &mut RunConfig) -> u64 {
    for seed in 1..1000 {
        cfg.seed = seed;
        let plan = cfg.schedule();
        if KINDS.iter().all(|k| plan.iter().any(|f| f.kind == *k)) {
            return seed;
        }
    }
    panic!("no seed below 1000 schedules every kind")
}
