//! A metrics recorder for tests: handles registered while it is the local recorder
//! (`metrics::with_local_recorder`) count into it, whatever the global recorder is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parking_lot::Mutex;

/// Counters and gauges by `name{label=value,...}`.
#[derive(Default)]
pub(crate) struct TestRecorder {
    /// Counter values, or gauge values as `f64` bits.
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl TestRecorder {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut name = key.name().to_string();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if !labels.is_empty() {
            name = format!("{name}{{{}}}", labels.join(","));
        }
        self.values.lock().entry(name).or_default().clone()
    }

    /// A counter's value (0 if never registered).
    pub(crate) fn counter(&self, key: &str) -> u64 {
        self.values
            .lock()
            .get(key)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    /// A gauge's value (0 if never registered).
    pub(crate) fn gauge(&self, key: &str) -> f64 {
        self.values
            .lock()
            .get(key)
            .map_or(0.0, |v| f64::from_bits(v.load(Ordering::Relaxed)))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
