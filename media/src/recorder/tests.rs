use std::time::Duration;

use super::*;

fn run(pushes: &[(usize, u64, i16, usize)]) -> Vec<(i16, i16)> {
    let mut a = Aligner::new();
    let mut out = Vec::new();
    let mut sink = |frames: &[(i16, i16)]| out.extend_from_slice(frames);
    for &(ch, stamp, v, n) in pushes {
        a.push(ch, stamp, &vec![v; n], &mut sink);
    }
    a.finish(&mut sink);
    out
}

#[test]
fn both_channels_interleave_in_time() {
    let mut pushes = Vec::new();
    for k in 1..=50u64 {
        pushes.push((0, k * 160, 100, 160));
        pushes.push((1, k * 160 + 7, -100, 160));
    }
    let out = run(&pushes);
    assert_eq!(out.len(), 8000);
    assert!(out.iter().all(|&(l, r)| l == 100 && r == -100));
}

#[test]
fn silent_channel_is_padded_and_gaps_kept() {
    // left talks for 1 s, right says one packet at 0.5 s
    let mut pushes: Vec<_> = (1..=50u64).map(|k| (0, k * 160, 5, 160)).collect();
    pushes.insert(25, (1, 4000, 9, 160));
    // left pauses 1 s then talks 100 ms
    for k in 1..=5u64 {
        pushes.push((0, 16000 + k * 160, 6, 160));
    }
    let out = run(&pushes);
    assert_eq!(out.len(), 16800);
    assert_eq!(out.iter().filter(|f| f.1 == 9).count(), 160);
    let pos = out.iter().position(|f| f.1 == 9).unwrap();
    assert_eq!(pos, 3840);
    assert!(out[8000..16000].iter().all(|f| *f == (0, 0)));
    assert!(out[16000..].iter().all(|f| f.0 == 6));
}

#[test]
fn jittered_arrivals_stay_contiguous() {
    let pushes: Vec<_> = (1..=20u64)
        .map(|k| (1, k * 160 + (k % 3) * 40, 3, 160))
        .collect();
    let out = run(&pushes);
    assert_eq!(out.len(), 3200);
    assert!(out.iter().all(|f| f.1 == 3));
}

fn read(path: &std::path::Path) -> (hound::WavSpec, Vec<i16>) {
    let r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    (spec, r.into_samples::<i16>().map(Result::unwrap).collect())
}

#[test]
fn recording_writes_a_stereo_wav() {
    let pool = RecorderPool::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/rec.wav");
    let t0 = Instant::now();
    let (tap, rec) = pool.start("c1", path.clone(), t0).unwrap();
    let loud = [g711::ulaw_encode(8000); 160];
    for k in 1..=25u64 {
        let now = t0 + Duration::from_millis(20 * k);
        tap.push(Leg::A, Codec::Pcmu, &loud, now);
        tap.push(Leg::B, Codec::Pcma, &[g711::alaw_encode(-8000); 320], now);
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(tap);
    rec.finish("c1");
    let (spec, s) = read(&path);
    assert_eq!(spec.channels, 2);
    assert_eq!(spec.sample_rate, 8000);
    assert!(s.len() >= 2 * 4000, "{}", s.len());
    assert!(s.chunks(2).any(|f| f[0] > 7000));
    assert!(s.chunks(2).any(|f| f[1] < -7000));
}

#[test]
fn many_recordings_share_the_pool_and_dropping_finishes_the_file() {
    let pool = RecorderPool::new();
    assert_eq!(pool.threads(), 0, "threads start lazily");
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut recs = Vec::new();
    for i in 0..50 {
        let path = dir.path().join(format!("r{i}.wav"));
        let (tap, rec) = pool.start(&format!("c{i}"), path.clone(), t0).unwrap();
        recs.push((path, tap, rec));
    }
    assert_eq!(pool.threads(), WRITERS);
    for k in 1..=10u64 {
        let now = t0 + Duration::from_millis(20 * k);
        for (_, tap, _) in &recs {
            assert!(tap.push(Leg::A, Codec::Pcmu, &[g711::ulaw_encode(4000); 160], now));
            assert!(tap.push(Leg::B, Codec::Pcmu, &[g711::ulaw_encode(-4000); 160], now));
        }
    }
    // Even ones are stopped and waited for, odd ones just dropped (no wait).
    let mut paths = Vec::new();
    for (i, (path, tap, rec)) in recs.into_iter().enumerate() {
        drop(tap);
        if i % 2 == 0 {
            rec.finish("c");
        } else {
            drop(rec);
        }
        paths.push(path);
    }
    // A writer serves its channel in order: once a later recording on each writer is
    // finished, every earlier close was handled.
    for i in 0..WRITERS {
        let (tap, rec) = pool
            .start("last", dir.path().join(format!("last{i}.wav")), t0)
            .unwrap();
        drop(tap);
        rec.finish("last");
    }
    assert_eq!(pool.threads(), WRITERS);
    for path in paths {
        let (spec, s) = read(&path);
        assert_eq!(spec.channels, 2);
        assert_eq!(s.len(), 2 * 1600, "{}", path.display());
        assert!(s.chunks(2).all(|f| f[0] > 3000 && f[1] < -3000));
    }
}

#[test]
fn a_flooding_recording_drops_audio_instead_of_blocking() {
    let metrics = crate::test_metrics::TestRecorder::default();
    let pool = metrics::with_local_recorder(&metrics, RecorderPool::new);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.wav");
    let t0 = Instant::now();
    let (tap, rec) = pool.start("flood", path.clone(), t0).unwrap();
    // 10,000 chunks as fast as possible: far more than PER_RECORDING can be queued.
    let dropped = (0..10_000u64)
        .filter(|k| {
            !tap.push(
                Leg::A,
                Codec::Pcmu,
                &[0xFF; 160],
                t0 + Duration::from_micros(k * 20),
            )
        })
        .count();
    assert!(dropped > 0);
    assert!(tap.in_flight.load(Ordering::Acquire) <= PER_RECORDING);
    assert_eq!(
        metrics.counter("lingxi_recording_dropped_frames_total"),
        dropped as u64 * 160
    );
    drop(tap);
    rec.finish("flood");
    assert_eq!(metrics.gauge("lingxi_recordings_active"), 0.0);
    let (spec, _) = read(&path);
    assert_eq!(spec.channels, 2);
}

#[test]
fn start_fails_when_the_directory_cannot_be_made() {
    let pool = RecorderPool::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = pool.start("c", file.join("sub/rec.wav"), Instant::now());
    assert!(matches!(err, Err(MediaError::Recording { .. })));
}
