//! Faults injected around a node rather than on its network: its wall clock, its disk and
//! its fsync.
//!
//! - **Clock** — libfaketime preloaded into every node (`DONT_FAKE_MONOTONIC=1`,
//!   `FAKETIME_NO_CACHE=1`) with a per-node `FAKETIME_TIMESTAMP_FILE` holding an offset
//!   (`+0`, `+7200`, `-90`): rewriting it steps the node's `SystemTime::now()` at once while
//!   `Instant` (tokio's timers) runs on, as an NTP step or a resumed VM does.
//! - **Disk full** — each node's data directory is its own small ext4 filesystem on a loop
//!   device (real `ENOSPC`, real fsync); the fault fills it with a ballast file growing at
//!   80 MiB/s (see [`FILL_STEP`]) until no block is free, the heal
//!   deletes it. Needs root (mount); without it the fault is skipped and the report says so.
//! - **Slow fsync** — the kernel here has no device-mapper (no `dm-delay`), so a tiny
//!   interposer, compiled with `cc` and preloaded into every node, makes each `fsync`,
//!   `fdatasync` and `sync_file_range` first wait the milliseconds in a per-node file: the
//!   node's thread really blocks in the call, as on a slow disk (the page cache and writeback
//!   themselves are not slowed).
//!
//! The harness starts nodes from `$LINGXI_BIN`; [`Host::prepare`] points it at a launcher
//! script that sets the preloads and the node's control files (next to its config:
//! `n1.faketime`, `n1.fsync`) and `exec`s the real binary, so the pid stays the node's and
//! SIGKILL/SIGSTOP reach it. [`Host`]'s drop unmounts what it mounted (lazily, so a node
//! still holding files cannot block it) and removes its directory; `main` also drops it on
//! Ctrl-C.

use super::schedule::FaultKind;
use anyhow::{Context as _, bail};
use lingxi_tests::cluster::Cluster;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Size of each node's data filesystem (sparse image). A node's Raft log and CDRs grow with
/// the calls it carried; the node keeps its default `node.min_free_disk_mb` of 64 MiB free.
/// 256 MiB ran out after ~29 minutes of load with every fault kind (BENCHMARKS.md).
const DISK_MIB: u64 = 512;

/// How fast the ballast grows: 4 MiB every 50 ms, 80 MiB/s (a full disk in about 6 s). A disk
/// fills over time (recordings, logs); 80 MiB/s is a burst thousands of recordings could not
/// write. The node's free-space guard catches any rate below its reserve per sled flush
/// interval (64 MiB / 200 ms); filling in one syscall would instead test a race no disk shows.
const FILL_STEP: u64 = 4 << 20;
const FILL_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The fsync interposer (see the module docs). Raw syscalls for its own I/O and sleep, so
/// nothing it calls is interposed again (libfaketime wraps `nanosleep`).
const FSYNC_SHIM_C: &str = r#"/* Written by lingxi-chaos: each fsync-family call first waits the milliseconds
   in the file named by $CHAOS_FSYNC_DELAY_FILE (missing or 0: no wait). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static long chaos_delay_ms(void) {
    const char *path = getenv("CHAOS_FSYNC_DELAY_FILE");
    if (!path) return 0;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[32];
    long n = syscall(SYS_read, fd, buf, sizeof buf - 1);
    syscall(SYS_close, fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    long v = strtol(buf, NULL, 10);
    return v > 0 && v < 60000 ? v : 0;
}

static void chaos_wait(void) {
    long ms = chaos_delay_ms();
    if (ms <= 0) return;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &ts, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    chaos_wait();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    chaos_wait();
    return real(fd);
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags) {
    static int (*real)(int, off_t, off_t, unsigned int);
    if (!real) real = (int (*)(int, off_t, off_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
    chaos_wait();
    return real(fd, off, n, flags);
}
"#;

/// What the runner set up around the nodes, and what it could not.
#[derive(Debug)]
pub struct Host {
    /// The runner's own directory (launcher, interposer, disk images); removed on drop.
    dir: PathBuf,
    /// libfaketime's multithreaded library, or why clock faults cannot be injected.
    faketime: Result<PathBuf, String>,
    /// The fsync interposer, or why slow-fsync faults cannot be injected.
    fsync_shim: Result<PathBuf, String>,
    /// Why disk-full faults cannot be injected (`None`: they can, once mounted).
    disk_blocked: Mutex<Option<String>>,
    /// Filesystems mounted on the nodes' data directories (mount point, image).
    mounts: Mutex<Vec<(PathBuf, PathBuf)>>,
}

impl Host {
    /// Sets up what `kinds` need: finds libfaketime, builds the fsync interposer, writes the
    /// launcher and points `$LINGXI_BIN` at it (the real binary is `bin`). Never fails: what
    /// cannot be had is recorded and those faults are skipped (and named in the report).
    ///
    /// Sets an environment variable: call it before any other thread exists.
    pub fn prepare(bin: &Path, kinds: &[FaultKind]) -> Host {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("lingxi-chaos-{}-{nanos}", std::process::id()));
        let mut host = Host {
            dir: dir.clone(),
            faketime: Err("not requested".into()),
            fsync_shim: Err("not requested".into()),
            disk_blocked: Mutex::new(None),
            mounts: Mutex::new(Vec::new()),
        };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            let why = format!("cannot create {}: {e}", dir.display());
            host.faketime = Err(why.clone());
            host.fsync_shim = Err(why.clone());
            *host.disk_blocked.lock().unwrap() = Some(why);
            return host;
        }
        if kinds.contains(&FaultKind::Clock) {
            host.faketime = find_faketime();
        }
        if kinds.contains(&FaultKind::SlowFsync) {
            host.fsync_shim = build_fsync_shim(&dir);
        }
        if kinds.contains(&FaultKind::DiskFull) && !is_root() {
            *host.disk_blocked.lock().unwrap() = Some(
                "not root: each node's data directory needs its own loop-mounted filesystem".into(),
            );
        }
        let preloads: Vec<&Path> = [&host.faketime, &host.fsync_shim]
            .into_iter()
            .filter_map(|r| r.as_ref().ok().map(PathBuf::as_path))
            .collect();
        if !preloads.is_empty()
            && let Err(e) = write_launcher(&dir, bin, &preloads)
        {
            let why = format!("writing the node launcher: {e:#}");
            for r in [&mut host.faketime, &mut host.fsync_shim] {
                if r.is_ok() {
                    *r = Err(why.clone());
                }
            }
        }
        host
    }

    /// Why faults of `kind` cannot be injected in this run, if they cannot.
    pub fn unavailable(&self, kind: FaultKind) -> Option<String> {
        match kind {
            FaultKind::Clock => self.faketime.as_ref().err().cloned(),
            FaultKind::SlowFsync => self.fsync_shim.as_ref().err().cloned(),
            FaultKind::DiskFull => self.disk_blocked.lock().unwrap().clone(),
            _ => None,
        }
    }

    /// How the fault kinds this host provides are injected, for the report.
    pub fn mechanism(&self, kind: FaultKind) -> &'static str {
        match kind {
            FaultKind::Clock => "libfaketime, monotonic untouched",
            FaultKind::DiskFull => "ballast file on the node's loop-mounted ext4",
            FaultKind::SlowFsync => "fsync interposer: no device-mapper here for dm-delay",
            _ => "",
        }
    }

    /// Steps node `config`'s wall clock to `step_s` seconds from the true time (0: back to
    /// the true time). Takes effect at the node's next clock read.
    pub fn set_clock(&self, config: &Path, step_s: i64) -> anyhow::Result<()> {
        if let Some(why) = self.unavailable(FaultKind::Clock) {
            bail!("{why}");
        }
        write_atomically(&config.with_extension("faketime"), &format!("{step_s:+}\n"))
    }

    /// Makes each fsync of node `config` take `ms` more (0: none).
    pub fn set_fsync_delay(&self, config: &Path, ms: u64) -> anyhow::Result<()> {
        if let Some(why) = self.unavailable(FaultKind::SlowFsync) {
            bail!("{why}");
        }
        write_atomically(&config.with_extension("fsync"), &format!("{ms}\n"))
    }

    /// Puts each node's data directory on its own small ext4 (one node at a time: stop it,
    /// mount a fresh filesystem where its data was, copy the data in, start it again). On
    /// failure disk-full faults are skipped (the reason is kept for the report).
    pub async fn mount_data_dirs(&self, cl: &mut Cluster) {
        if self.unavailable(FaultKind::DiskFull).is_some() {
            return;
        }
        for i in 0..cl.len() {
            if let Err(e) = self.mount_one(cl, i).await {
                *self.disk_blocked.lock().unwrap() =
                    Some(format!("mounting {}'s data filesystem: {e:#}", cl.name(i)));
                if !cl.is_running(i) {
                    let _ = cl.restart(i).await;
                }
                return;
            }
        }
    }

    async fn mount_one(&self, cl: &mut Cluster, i: usize) -> anyhow::Result<()> {
        let data = cl.nodes[i].data_dir.clone();
        let image = self.dir.join(format!("{}.ext4", cl.name(i)));
        std::fs::File::create(&image)?.set_len(DISK_MIB << 20)?;
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", "-L", cl.name(i)],
            &image,
        )?;
        cl.kill(i);
        let aside = data.with_extension("before-mount");
        std::fs::rename(&data, &aside)?;
        std::fs::create_dir(&data)?;
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&data)
            .output()?;
        if !mounted.status.success() {
            let _ = std::fs::remove_dir(&data);
            std::fs::rename(&aside, &data)?;
            bail!(
                "mount -o loop {} {}: {}",
                image.display(),
                data.display(),
                String::from_utf8_lossy(&mounted.stderr).trim()
            );
        }
        self.mounts
            .lock()
            .unwrap()
            .push((data.clone(), image.clone()));
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", aside.display()))
            .arg(&data)
            .status()?;
        if !st.success() {
            bail!("copying {} onto its filesystem: {st}", data.display());
        }
        std::fs::remove_dir_all(&aside)?;
        cl.restart(i)
            .await
            .with_context(|| format!("restarting {} on its own filesystem", cl.name(i)))
    }

    /// Fills node `data`'s filesystem: a ballast file grows at [`FILL_STEP`] per
    /// [`FILL_PAUSE`] until it takes every free block. Returns the bytes taken.
    pub async fn fill(&self, data: &Path) -> anyhow::Result<u64> {
        if let Some(why) = self.unavailable(FaultKind::DiskFull) {
            bail!("{why}");
        }
        if !self.mounts.lock().unwrap().iter().any(|(m, _)| m == data) {
            bail!("{} is not on a filesystem of the runner's", data.display());
        }
        let ballast = data.join("chaos-ballast");
        let mut taken = 0u64;
        // Bounded: the filesystem has DISK_MIB, so at most that many steps succeed.
        for _ in 0..(DISK_MIB << 20) / FILL_STEP + 4 {
            let st = Command::new("fallocate")
                .args(["-o", &taken.to_string(), "-l", &FILL_STEP.to_string()])
                .arg(&ballast)
                .stderr(std::process::Stdio::null())
                .status()?;
            if !st.success() {
                break;
            }
            taken += FILL_STEP;
            tokio::time::sleep(FILL_PAUSE).await;
        }
        // The last blocks: zeros until ENOSPC (bounded: less than a step remains).
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096", "count=65536", "status=none"])
            .arg(format!("of={}", data.join("chaos-ballast-tail").display()))
            .stderr(std::process::Stdio::null())
            .status();
        taken += std::fs::metadata(data.join("chaos-ballast-tail"))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(taken)
    }

    /// Deletes the ballast: the space is back.
    pub fn drain(&self, data: &Path) -> anyhow::Result<()> {
        for f in ["chaos-ballast", "chaos-ballast-tail"] {
            match std::fs::remove_file(data.join(f)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Free bytes on node `data`'s filesystem (for the report).
    pub fn free(&self, data: &Path) -> Option<u64> {
        lingxi_cluster::free_bytes(data).ok()
    }

    /// Stops every node and unmounts their filesystems, so the harness can remove its
    /// directory (call it before dropping the cluster).
    pub fn release(&self, cl: &mut Cluster) {
        if self.mounts.lock().unwrap().is_empty() {
            return;
        }
        for i in 0..cl.len() {
            cl.kill(i);
        }
        self.unmount_all(false);
    }

    /// Unmounts what was mounted; `tidy`: also removes the harness directory the mount points
    /// were in, which the harness could not remove while they were mounted (an interrupted
    /// run drops the cluster first).
    fn unmount_all(&self, tidy: bool) {
        let keep = std::env::var_os("LINGXI_KEEP_TEST_DIR").is_some();
        for (mount, _) in self.mounts.lock().unwrap().drain(..).rev() {
            // Lazy: detached now even if a node still holds files; the loop device is freed
            // (autoclear) when the last one closes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&mount)
                .stderr(std::process::Stdio::null())
                .status();
            let parent = mount.parent().filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("lingxi-cluster-"))
            });
            if let (true, false, Some(p)) = (tidy, keep, parent) {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.unmount_all(true);
        if std::env::var_os("LINGXI_KEEP_TEST_DIR").is_some() {
            eprintln!(
                "keeping the chaos host's directory (data images) {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether this process runs as root (from /proc: no libc needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// libfaketime's multithreaded library, where Debian and Ubuntu put it.
fn find_faketime() -> Result<PathBuf, String> {
    let mut candidates = vec![
        PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1"),
        PathBuf::from("/usr/local/lib/faketime/libfaketimeMT.so.1"),
    ];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            candidates.push(e.path().join("faketime/libfaketimeMT.so.1"));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "libfaketime not found (apt-get install libfaketime): clock jumps skipped".to_string()
    })
}

/// Compiles the fsync interposer with the system C compiler.
fn build_fsync_shim(dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("chaos-fsync-delay.c");
    let lib = dir.join("chaos-fsync-delay.so");
    std::fs::write(&src, FSYNC_SHIM_C).map_err(|e| format!("writing {}: {e}", src.display()))?;
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(lib),
        Ok(o) => Err(format!(
            "compiling the fsync interposer failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "no C compiler (cc: {e}) to build the fsync interposer: slow fsync skipped"
        )),
    }
}

/// Writes the launcher and points `$LINGXI_BIN` at it.
fn write_launcher(dir: &Path, bin: &Path, preloads: &[&Path]) -> anyhow::Result<()> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let preload: Vec<String> = preloads.iter().map(|p| p.display().to_string()).collect();
    let script = format!(
        r#"#!/bin/sh
# Written by lingxi-chaos: starts a lingxi node with the chaos preloads. Each node's control
# files sit next to its config: n1.faketime (wall-clock offset, +0 = true time) and n1.fsync
# (ms added to each fsync). Without --config it just runs lingxi.
cfg=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--config" ]; then cfg="$a"; fi
  prev="$a"
done
if [ -n "$cfg" ]; then
  base="${{cfg%.toml}}"
  [ -f "$base.faketime" ] || echo "+0" > "$base.faketime"
  [ -f "$base.fsync" ] || echo "0" > "$base.fsync"
  export LD_PRELOAD={preload}
  export DONT_FAKE_MONOTONIC=1 FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_NO_CACHE=1
  export FAKETIME_TIMESTAMP_FILE="$base.faketime"
  export CHAOS_FSYNC_DELAY_FILE="$base.fsync"
fi
exec {bin} "$@"
"#,
        preload = quote(Path::new(&preload.join(" "))),
        bin = quote(bin),
    );
    let path = dir.join("lingxi-launcher.sh");
    std::fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    // SAFETY (of the caller): `prepare` runs before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("LINGXI_BIN", &path);
    }
    Ok(())
}

/// Replaces `path`'s content in one step (a node re-reads it at every clock read).
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Runs `prog args.. path`, failing on a non-zero exit.
fn run(prog: &str, args: &[&str], path: &Path) -> anyhow::Result<()> {
    let out = Command::new(prog).args(args).arg(path).output()?;
    if !out.status.success() {
        bail!(
            "{prog} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
