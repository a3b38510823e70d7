use super::*;

fn run(pushes: &[(usize, u64, i16, usize)]) -> Vec<(i16, i16)> {
    let mut a = Aligner::new();
    let mut out = Vec::new();
    let mut sink = |l, r| out.push((l, r));
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

#[test]
fn recording_writes_a_stereo_wav() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/rec.wav");
    let t0 = Instant::now();
    let (tap, rec) = start("c1", path.clone(), t0).unwrap();
    let loud = [g711::ulaw_encode(8000); 160];
    for k in 1..=25u64 {
        let now = t0 + std::time::Duration::from_millis(20 * k);
        tap.push(Leg::A, Codec::Pcmu, &loud, now);
        tap.push(Leg::B, Codec::Pcma, &[g711::alaw_encode(-8000); 320], now);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(tap);
    rec.finish("c1");
    let r = hound::WavReader::open(&path).unwrap();
    assert_eq!(r.spec().channels, 2);
    assert_eq!(r.spec().sample_rate, 8000);
    let s: Vec<i16> = r.into_samples::<i16>().map(Result::unwrap).collect();
    assert!(s.len() >= 2 * 4000, "{}", s.len());
    assert!(s.chunks(2).any(|f| f[0] > 7000));
    assert!(s.chunks(2).any(|f| f[1] < -7000));
}
