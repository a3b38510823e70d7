//! `lingxi-chaos`: attack a cluster of real `lingxi` processes with a seeded fault schedule
//! while it carries calls, then prove nothing was lost.
//!
//! ```text
//! cargo build --release -p lingxi-node          # the binary under attack
//! cargo run --release -p lingxi-chaos -- run --nodes 3 --duration 60s --seed 7 --report out.json
//! ```
//!
//! Exit status: 0 every invariant held, 1 an invariant broke (the report names it), 2 the
//! run could not be carried out.

mod runner;

use clap::{Parser, Subcommand};
use runner::RunConfig;
use runner::schedule::FaultKind;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "lingxi-chaos", about = "Chaos testing for Lingxi clusters")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster of real `lingxi` processes, load it with calls, inject a seeded fault
    /// schedule, and check the invariants.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Nodes in the cluster (at least 3).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Length of the loaded run: `90s`, `30m`, `1h`, `500ms` (bare number: seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and the call plan (the same seed replays the same
    /// schedule). Default: from the clock, printed.
    #[arg(long, alias = "reproduce")]
    seed: Option<u64>,
    /// Where to write the JSON report (a Markdown summary goes next to it, `.md`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// The `lingxi` binary. Default: `lingxi` next to this executable
    /// (target/<profile>/lingxi: `cargo build --release -p lingxi-node`).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Agents logged in (1001...). Default: 2 per node.
    #[arg(long)]
    agents: Option<usize>,
    /// New calls per second. Default: about 70% of what the agents can take.
    #[arg(long)]
    rate: Option<f64>,
    /// Fault kinds, comma-separated: kill, freeze, partition, netem, clock, disk_full,
    /// slow_fsync; or `all` (the default), or `none`. Kinds this host cannot inject (no
    /// libfaketime, not root, no C compiler) are skipped and named in the report.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Callers' talk time range once an agent answers, e.g. `2s..8s`.
    #[arg(long)]
    talk: Option<String>,
}

/// Parses `60s`, `30m`, `1h`, `500ms`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with ms, s, m or h"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_faults(s: &str) -> Result<Vec<FaultKind>, String> {
    if s.trim() == "none" || s.trim().is_empty() {
        return Ok(Vec::new());
    }
    if s.trim() == "all" {
        return Ok(FaultKind::ALL.to_vec());
    }
    s.split(',')
        .map(|k| {
            FaultKind::parse(k.trim()).ok_or_else(|| {
                format!(
                    "unknown fault kind {k:?} (kill, freeze, partition, netem, clock, \
                     disk_full, slow_fsync, all, none)"
                )
            })
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Cmd::Run(a) = cli.cmd;
    match run(a) {
        Ok(held) => {
            if held {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("lingxi-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(a: RunArgs) -> anyhow::Result<bool> {
    let bin = match a.bin {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("lingxi"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate this executable's directory"))?,
    };
    if !bin.is_file() {
        anyhow::bail!(
            "{} is missing: build it with `cargo build --release -p lingxi-node`, or pass --bin",
            bin.display()
        );
    }
    // The harness finds the binary through LINGXI_BIN.
    // SAFETY: no other thread exists yet (the runtime is built below).
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("LINGXI_BIN", &bin);
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let mut cfg = RunConfig::new(a.nodes, a.duration, seed);
    if let Some(n) = a.agents {
        let per_call = cfg.rate / cfg.agents as f64;
        cfg.agents = n.max(1);
        cfg.rate = per_call * cfg.agents as f64;
    }
    if let Some(t) = &a.talk {
        let (lo, hi) = t
            .split_once("..")
            .ok_or_else(|| anyhow::anyhow!("--talk {t:?}: expected MIN..MAX, e.g. 2s..8s"))?;
        cfg.talk = (
            parse_duration(lo).map_err(anyhow::Error::msg)?,
            parse_duration(hi).map_err(anyhow::Error::msg)?,
        );
    }
    if let Some(r) = a.rate {
        cfg.rate = r;
    }
    cfg.faults = parse_faults(&a.faults).map_err(anyhow::Error::msg)?;
    // Short runs: less warm-up and cool-down.
    if cfg.duration < Duration::from_secs(40) {
        cfg.warmup = Duration::from_secs(3);
        cfg.cooldown = Duration::from_secs(3);
    }
    // Clock, disk and fsync faults: the launcher, the interposer (sets LINGXI_BIN too: no
    // other thread exists yet). Dropped last: it unmounts the nodes' filesystems.
    let host = Arc::new(runner::host::Host::prepare(&bin, &cfg.faults));
    cfg.host = Some(host.clone());
    eprintln!("lingxi-chaos: replay with: {}", cfg.replay_command());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Ctrl-C ends the run cleanly: the cluster's nodes are killed with the runtime, then the
    // host unmounts and removes what it made.
    let report = rt.block_on(async {
        tokio::select! {
            r = runner::run(&cfg) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    drop(rt);
    drop(cfg);
    drop(host);
    let report = report?;
    let md = report.markdown();
    println!("{md}");
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        std::fs::write(path.with_extension("md"), &md)?;
        let calls = serde_json::json!({ "calls": report.calls, "agent_legs": report.legs });
        std::fs::write(
            path.with_extension("calls.json"),
            serde_json::to_string_pretty(&calls)? + "\n",
        )?;
        eprintln!(
            "lingxi-chaos: wrote {} and {}",
            path.display(),
            path.with_extension("md").display()
        );
    }
    if !report.invariants_held {
        eprintln!(
            "lingxi-chaos: INVARIANT BROKEN (seed {}): {}",
            report.seed,
            report
                .violations
                .first()
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
    }
    Ok(report.invariants_held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_fault_lists_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(
            parse_faults("kill,netem").unwrap(),
            vec![FaultKind::Kill, FaultKind::Netem]
        );
        assert!(parse_faults("none").unwrap().is_empty());
        assert_eq!(parse_faults("all").unwrap(), FaultKind::ALL.to_vec());
        assert!(parse_faults("meteor").is_err());
    }
}
