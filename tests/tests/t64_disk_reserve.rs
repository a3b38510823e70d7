//! A node does not start on a disk below its free-space reserve (`node.min_free_disk_mb`):
//! it says which directory and how much is free, and exits non-zero, before it writes
//! anything sled could be left half-written by.
//!
//! Needs the binary: `cargo build -p lingxi-node` (./test.sh does it).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use lingxi_tests::cluster::lingxi_binary;

#[test]
fn a_node_refuses_to_start_below_its_disk_reserve() -> anyhow::Result<()> {
    let bin = lingxi_binary()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[node]\nid = \"reserve\"\ndata_dir = \"data\"\n\n\
         [sip]\nlisten_ip = \"127.0.0.1\"\nudp_port = 0\ntcp_port = 0\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
    )?;
    std::fs::create_dir_all(&data)?;
    // A reserve 1 GiB beyond what is free: the disk counts as nearly full.
    let reserve = lingxi_cluster::free_bytes(dir.path())? / (1024 * 1024) + 1024;
    let mut child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("LINGXI__NODE__MIN_FREE_DISK_MB", reserve.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the node was still running 60 s after start on a full disk");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!status.success(), "exited with {status}: {said}");
    ensure!(said.contains("disk nearly full"), "{said}");
    ensure!(said.contains(&format!("{reserve} MiB")), "{said}");
    ensure!(said.contains("min_free_disk_mb"), "{said}");
    ensure!(said.contains(&data.display().to_string()), "{said}");
    // Nothing was written: no storage was created under the data directory.
    let state = data.join("state");
    ensure!(
        !state.join("db").exists(),
        "the node wrote {} below its reserve",
        state.display()
    );
    Ok(())
}
