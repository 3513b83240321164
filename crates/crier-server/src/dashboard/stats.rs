//! Figures for the dashboard, read from the node's own Prometheus metrics (the same
//! text `/metrics` serves), and a short history of them for the rates and the chart.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Time between two samples.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: five minutes.
pub(crate) const SAMPLES_KEPT: usize = 150;

/// One series of the exposition: a metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses Prometheus text exposition (version 0.0.4): comments and blank lines are
/// skipped, as is any line that does not parse (the dashboard shows what it can).
pub(crate) fn parse(text: &str) -> Vec<Series> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    (!name.is_empty()).then(|| Series {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"}` → the pairs and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = s.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        s = &after[end + 2..];
    }
}

/// Sum of every series of `name` (over all label sets).
pub(crate) fn total(series: &[Series], name: &str) -> f64 {
    series
        .iter()
        .filter(|s| s.name == name)
        // Not `sum()`: an empty f64 sum is -0.0, which shows as "-0".
        .fold(0.0, |sum, s| sum + s.value)
}

/// Whether a counter family counts failures of some kind, by its name: errors,
/// rejections, drops, failures, disconnects. New families of those kinds show up on
/// the dashboard without a change here.
pub(crate) fn is_error_family(name: &str) -> bool {
    name.ends_with("_total")
        && ["error", "reject", "drop", "fail", "disconnect"]
            .iter()
            .any(|w| name.contains(w))
}

/// `name{a="x",b="y"}`: one key per error series.
pub(crate) fn series_key(s: &Series) -> String {
    if s.labels.is_empty() {
        return s.name.clone();
    }
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    format!("{}{{{}}}", s.name, labels.join(","))
}

/// What one sample keeps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub at_ms: u64,
    pub published: f64,
    pub delivered: f64,
    pub poll_requests: f64,
    pub errors: BTreeMap<String, f64>,
}

impl Sample {
    pub(crate) fn of(series: &[Series], at_ms: u64) -> Self {
        Self {
            at_ms,
            published: total(series, "crier_messages_published_total"),
            delivered: total(series, "crier_messages_delivered_total"),
            poll_requests: total(series, "crier_poll_requests_total"),
            errors: series
                .iter()
                .filter(|s| is_error_family(&s.name))
                .map(|s| (series_key(s), s.value))
                .collect(),
        }
    }
}

/// The last [`SAMPLES_KEPT`] samples, oldest first.
#[derive(Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub(crate) fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock();
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub(crate) fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().iter().cloned().collect()
    }

    /// Samples every [`SAMPLE_EVERY`] until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            self.push(Sample::of(&current(), now_ms()));
        }
    }
}

/// The process's metrics now.
pub(crate) fn current() -> Vec<Series> {
    crate::metrics::handle()
        .map(|h| parse(&h.render()))
        .unwrap_or_default()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Per-second rate between two samples.
pub(crate) fn rate(before: &Sample, after: &Sample, field: fn(&Sample) -> f64) -> f64 {
    let secs = after.at_ms.saturating_sub(before.at_ms) as f64 / 1000.0;
    if secs <= 0.0 {
        return 0.0;
    }
    (field(after) - field(before)).max(0.0) / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP crier_messages_published_total Messages published.
# TYPE crier_messages_published_total counter
crier_messages_published_total{ingest="http"} 7
crier_messages_published_total{ingest="udp"} 3

crier_connections 12
crier_client_errors_total{kind="bad_auth"} 2
crier_client_errors_total{kind="odd \"quoted\" \\ value"} 1
crier_api_request_duration_seconds_bucket{le="+Inf"} 5
crier_disconnects_total{code="4201"} 4
not a metric line
"#;

    #[test]
    fn parses_names_labels_and_values() {
        let s = parse(TEXT);
        assert_eq!(
            s[0],
            Series {
                name: "crier_messages_published_total".into(),
                labels: vec![("ingest".into(), "http".into())],
                value: 7.0
            }
        );
        assert_eq!(total(&s, "crier_messages_published_total"), 10.0);
        assert_eq!(total(&s, "crier_connections"), 12.0);
        assert!(total(&s, "absent").is_sign_positive());
        let odd = s
            .iter()
            .find(|x| x.value == 1.0 && x.name == "crier_client_errors_total")
            .unwrap();
        assert_eq!(odd.labels[0].1, r#"odd "quoted" \ value"#);
        let bucket = s.iter().find(|x| x.name.ends_with("_bucket")).unwrap();
        assert_eq!(bucket.labels, vec![("le".into(), "+Inf".into())]);
        assert!(!s.iter().any(|x| x.name == "not"));
    }

    #[test]
    fn error_families_are_found_by_name() {
        let sample = Sample::of(&parse(TEXT), 1000);
        let keys: Vec<&str> = sample.errors.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                r#"crier_client_errors_total{kind="bad_auth"}"#,
                r#"crier_client_errors_total{kind="odd "quoted" \ value"}"#,
                r#"crier_disconnects_total{code="4201"}"#,
            ]
        );
        assert!(!is_error_family("crier_messages_published_total"));
        assert!(is_error_family("crier_ingest_dropped_total"));
        assert!(is_error_family("crier_webhooks_failed_total"));
        assert!(is_error_family("crier_requests_rejected_total"));
    }

    #[test]
    fn history_keeps_the_last_samples_and_rates_are_per_second() {
        let h = History::default();
        for i in 0..(SAMPLES_KEPT as u64 + 5) {
            let mut s = Sample::of(&[], i * 2000);
            s.published = (i * 10) as f64;
            h.push(s);
        }
        let all = h.snapshot();
        assert_eq!(all.len(), SAMPLES_KEPT);
        assert_eq!(all[0].at_ms, 5 * 2000);
        assert_eq!(rate(&all[0], &all[1], |s| s.published), 5.0);
        // A counter that went down (a restart) is not a negative rate.
        assert_eq!(rate(&all[1], &all[0], |s| s.published), 0.0);
    }
}
