use super::*;

fn write_wav(path: &Path, rate: u32, channels: u16, secs: f32) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = (rate as f32 * secs) as usize;
    for i in 0..n {
        let v = ((TAU * 440.0 * i as f32 / rate as f32).sin() * 10000.0) as i16;
        for _ in 0..channels {
            w.write_sample(v).unwrap();
        }
    }
    w.finalize().unwrap();
}

#[test]
fn loads_and_resamples_common_formats() {
    let dir = tempfile::tempdir().unwrap();
    for (rate, ch) in [(8000, 1), (16000, 1), (44100, 2), (48000, 2)] {
        let p = dir.path().join(format!("t{rate}_{ch}.wav"));
        write_wav(&p, rate, ch, 1.0);
        let clip = PcmClip::load_wav(&p).unwrap();
        let n = clip.samples().len();
        assert!((7990..=8000).contains(&n), "{rate}/{ch}: {n}");
        let peak = clip
            .samples()
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!(peak > 8000 && peak <= 10001, "{rate}/{ch}: peak {peak}");
    }
}

#[test]
fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.wav");
    let e = PcmClip::load_wav(&missing).unwrap_err();
    assert!(e.to_string().contains("nope.wav"), "{e}");
    let p = dir.path().join("float.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&p, spec).unwrap();
    w.write_sample(0.5f32).unwrap();
    w.finalize().unwrap();
    let e = PcmClip::load_wav(&p).unwrap_err();
    assert!(
        matches!(e, MediaError::WavFormat { .. }) && e.to_string().contains("float.wav"),
        "{e}"
    );
    let garbage = dir.path().join("garbage.wav");
    std::fs::write(&garbage, b"not a wav at all").unwrap();
    assert!(PcmClip::load_wav(&garbage).is_err());
}

#[test]
fn hold_music_is_real_audio() {
    let clip = PcmClip::hold_music();
    let s = clip.samples();
    assert!(
        (7500..=8500).contains(&clip.duration_ms()),
        "{}",
        clip.duration_ms()
    );
    // loud enough, not clipped, and audible through most of it
    let peak = s.iter().map(|v| v.unsigned_abs()).max().unwrap();
    assert!(peak > 8000 && peak < 20000, "peak {peak}");
    let loud_frames = s
        .chunks(160)
        .filter(|f| f.iter().map(|v| v.unsigned_abs() as u32).max().unwrap_or(0) > 300)
        .count();
    assert!(loud_frames * 10 > s.len() / 160 * 8, "{loud_frames}");
    // loop point is quiet
    assert!(s[s.len() - 1].unsigned_abs() < 300);
    assert_eq!(clip.encoded(Codec::Pcmu).len(), s.len());
}
