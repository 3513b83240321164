//! Reading `/metrics` in tests.
//!
//! The Prometheus recorder is installed once per process (`crier_server::metrics`), so
//! every server a test binary starts adds to the same counters, and tests run in
//! parallel. A test therefore never asserts an absolute value: it takes the value
//! before it acts and waits for the increase its own action causes. Where a test
//! asserts an exact increase, no other test in the same binary touches that series.

use super::{TestServer, WAIT};
use std::time::Duration;

/// The sum of every sample of `name` whose labels contain `label` (`""` for all).
pub async fn value(server: &TestServer, name: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    sum(&text, name, label)
}

/// The sum of `name`'s samples in a Prometheus text, `label` as in [`value`].
pub fn sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let labelled = rest.is_empty() || rest.starts_with('{');
            (labelled && rest.contains(label)).then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

/// Waits until `name{label}` is at least `before + delta`; returns the value reached.
pub async fn wait_increase(
    server: &TestServer,
    name: &str,
    label: &str,
    before: f64,
    delta: f64,
) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = value(server, name, label).await;
        if v >= before + delta {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{{label}}} is {v}, never reached {before} + {delta}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
