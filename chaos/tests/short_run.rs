//! A short seeded chaos run against real `lingxi` processes: 3 nodes, about 22 s of calls,
//! the owner of calls killed, frozen and cut off, with every invariant checked afterwards.
//!
//! Needs the binary: `cargo build -p lingxi-node` (./test.sh builds it first). The runner is
//! the `lingxi-chaos` binary's module, compiled in here as well.

#[allow(dead_code, unreachable_pub)]
#[path = "../src/runner.rs"]
mod runner;

use runner::RunConfig;
use runner::schedule::FaultKind;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_seeded_run_keeps_every_invariant() {
    let mut cfg = RunConfig::new(3, Duration::from_secs(22), 11);
    cfg.faults = vec![FaultKind::Kill, FaultKind::Freeze, FaultKind::Partition];
    cfg.agents = 4;
    cfg.rate = 0.5;
    cfg.warmup = Duration::from_secs(3);
    cfg.cooldown = Duration::from_secs(3);
    let report = runner::run(&cfg)
        .await
        .expect("the chaos run could not be carried out");
    let violations: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report.invariants_held,
        "{}\nviolations:\n{}",
        report.markdown(),
        violations.join("\n")
    );
    assert!(!report.faults.is_empty(), "no fault was injected");
    assert!(
        report.calls_answered > 0,
        "no call was answered: {}",
        report.markdown()
    );
    assert!(report.cdrs > 0, "no CDR was read back");
    eprintln!("{}", report.markdown());
}
