//! What a worker is asked to do and what it answers: the messages between the
//! coordinator and its workers, one JSON object per line when the worker is a child
//! process.

use crate::hist::Buckets;
use serde::{Deserialize, Serialize};

/// Which server the run talks to, and so which protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    /// Crier: Pusher protocol, signed HTTP API, Crier's SSE and long-poll.
    Crier,
    /// Nginx with the Nchan module: raw messages on /sub/CHAN, POST /pub?id=CHAN.
    Nchan,
}

/// How subscribers receive messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    Ws,
    Sse,
    Poll,
}

/// One worker's slice of the subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerPlan {
    pub(crate) target: Target,
    pub(crate) transport: Transport,
    /// `http://host:port` of the server, or of each node of a cluster: connection
    /// `idx` talks to `urls[node_of(idx)]`.
    pub(crate) urls: Vec<String>,
    /// Publishing tasks (`--concurrency`, at most one per channel), so that a worker
    /// knows which node published each channel: see [`publishing_node`].
    pub(crate) publishers: usize,
    pub(crate) app_key: String,
    /// Channel names are this prefix plus the channel index; unique per run so no
    /// history of an earlier run is delivered.
    pub(crate) prefix: String,
    /// Global indices of this worker's connections: `conn_start..conn_end`.
    pub(crate) conn_start: usize,
    pub(crate) conn_end: usize,
    pub(crate) channels: usize,
    pub(crate) subs_per_conn: usize,
    pub(crate) source_addrs: usize,
    /// Connection attempts in progress at once (per worker).
    pub(crate) connect_concurrency: usize,
    pub(crate) connect_timeout_secs: f64,
    /// Long-poll `timeout` parameter.
    pub(crate) poll_timeout_secs: u64,
}

impl WorkerPlan {
    /// The channels connection `idx` subscribes to: consecutive indices, wrapping, so
    /// every channel gets the same number of subscribers (± 1).
    pub(crate) fn channels_of(&self, idx: usize) -> Vec<u32> {
        channels_of(idx, self.channels, self.subs_per_conn)
    }

    pub(crate) fn channel_name(&self, channel: u32) -> String {
        format!("{}{channel}", self.prefix)
    }

    pub(crate) fn len(&self) -> usize {
        self.conn_end - self.conn_start
    }

    /// The node connection `idx` subscribes on; see [`subscriber_node`].
    pub(crate) fn node_of(&self, idx: usize) -> usize {
        subscriber_node(idx, self.channels, self.subs_per_conn, self.urls.len())
    }

    /// The node that publishes `channel`; see [`publishing_node`].
    pub(crate) fn publisher_of(&self, channel: u32) -> usize {
        publishing_node(
            channel as usize,
            self.channels,
            self.publishers,
            self.urls.len(),
        )
    }
}

/// The node connection `idx` subscribes on, of `nodes`. Connections take the channels
/// in rounds (see [`channels_of`]); each round goes to the next node, so every channel
/// with at least `nodes` subscribers has subscribers on every node.
pub(crate) fn subscriber_node(
    idx: usize,
    channels: usize,
    subs_per_conn: usize,
    nodes: usize,
) -> usize {
    let subs = subs_per_conn.min(channels).max(1);
    (idx * subs / channels.max(1)) % nodes.max(1)
}

/// The node that publishes `channel`, of `nodes`: the publishing task that owns it
/// (`channel % tasks`, with `tasks` = the in-flight bound, at most one per channel)
/// sends to node `task % nodes`.
pub(crate) fn publishing_node(
    channel: usize,
    channels: usize,
    concurrency: usize,
    nodes: usize,
) -> usize {
    let tasks = concurrency.clamp(1, channels.max(1));
    (channel % tasks) % nodes.max(1)
}

/// See [`WorkerPlan::channels_of`].
pub(crate) fn channels_of(idx: usize, channels: usize, subs_per_conn: usize) -> Vec<u32> {
    let subs = subs_per_conn.min(channels).max(1);
    (0..subs)
        .map(|j| ((idx * subs + j) % channels.max(1)) as u32)
        .collect()
}

/// Sent once publishing is over: how many messages each channel got.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Finish {
    pub(crate) published: Vec<u64>,
    /// How long to wait for late deliveries before counting them missing.
    pub(crate) drain_secs: f64,
}

/// Coordinator to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ToWorker {
    Plan(WorkerPlan),
    Finish(Finish),
}

/// Worker to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FromWorker {
    Progress {
        connected: u64,
        failed: u64,
        received: u64,
    },
    /// Every connection of the worker is subscribed or has failed; `last_us` is when
    /// the last one finished (Unix micros), for an exact connect rate.
    Ready {
        connected: u64,
        failed: u64,
        last_us: u64,
    },
    Report(Box<WorkerReport>),
}

/// A worker's results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WorkerReport {
    pub(crate) connected: u64,
    pub(crate) failed: u64,
    /// Connections the server closed (or that broke) before their messages arrived.
    pub(crate) dropped: u64,
    pub(crate) expected: u64,
    /// Distinct messages received.
    pub(crate) received: u64,
    pub(crate) missing: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    /// `crier:gap` notices received (history could not cover a resume).
    pub(crate) gaps: u64,
    /// Messages for a channel the connection did not subscribe to.
    pub(crate) unexpected: u64,
    /// Of `received`, those delivered by another node than the one that published
    /// them (cluster runs; 0 with one server).
    #[serde(default)]
    pub(crate) cross_node: u64,
    /// Unix micros of the first and last delivery (0 if none).
    pub(crate) first_delivery_us: u64,
    pub(crate) last_delivery_us: u64,
    pub(crate) latency: Buckets,
    /// CPU seconds of the worker process when it is a child; `None` in-process.
    pub(crate) cpu_secs: Option<f64>,
    /// Distinct error messages with their counts (the most frequent few).
    pub(crate) errors: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_subscriptions_evenly() {
        let mut per_channel = [0u32; 5];
        for idx in 0..20 {
            for c in channels_of(idx, 5, 2) {
                per_channel[c as usize] += 1;
            }
        }
        assert_eq!(per_channel, [8; 5]);
        assert_eq!(channels_of(3, 1, 4), vec![0]);
    }

    #[test]
    fn every_channel_has_subscribers_on_every_node() {
        // 20 channels, 100 connections, 2 subscriptions each: 10 per channel.
        let mut nodes_of = vec![std::collections::HashSet::new(); 20];
        for idx in 0..100 {
            for c in channels_of(idx, 20, 2) {
                nodes_of[c as usize].insert(subscriber_node(idx, 20, 2, 3));
            }
        }
        assert!(nodes_of.iter().all(|n| n.len() == 3), "{nodes_of:?}");
        // One channel: connections alternate.
        let one: Vec<usize> = (0..4).map(|i| subscriber_node(i, 1, 1, 2)).collect();
        assert_eq!(one, vec![0, 1, 0, 1]);
    }

    #[test]
    fn publishers_are_spread_over_the_nodes() {
        // 10 channels, 4 tasks: channel c is task c % 4's, on node (c % 4) % 2.
        let nodes: Vec<usize> = (0..10).map(|c| publishing_node(c, 10, 4, 2)).collect();
        assert_eq!(nodes, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(publishing_node(7, 10, 64, 1), 0);
    }
}
