//! Subscriber connections. Each connection is one task running one of the protocol
//! clients below; they share the bookkeeping here: per-channel trackers, latency
//! samples, and the signal that publishing is over.

mod nchan_poll;
mod poll;
mod sse;
mod ws;

use crate::hist;
use crate::net::Endpoint;
use crate::payload::{self, Stamp};
use crate::plan::{Finish, Target, Transport, WorkerPlan};
use crate::track::{Arrival, ChanTrack};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// Latency samples buffered per connection before merging into the shared histogram.
const LATENCY_BATCH: usize = 128;

/// What the connection tasks of one worker share.
pub(crate) struct Ctx {
    pub(crate) plan: WorkerPlan,
    /// The server's address, or each cluster node's (`plan.urls`).
    endpoints: Vec<Endpoint>,
    pub(crate) connect_permits: Semaphore,
    pub(crate) connected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) received: AtomicU64,
    /// When the latest connection finished connecting (or failing), Unix micros.
    pub(crate) last_admitted_us: AtomicU64,
    pub(crate) latency: hist::Shared,
}

impl Ctx {
    /// # Errors
    /// When the plan's URL is not an `http://host:port`.
    pub(crate) fn new(plan: WorkerPlan) -> anyhow::Result<Self> {
        Ok(Self {
            endpoints: plan
                .urls
                .iter()
                .map(|u| Endpoint::parse(u))
                .collect::<anyhow::Result<_>>()?,
            connect_permits: Semaphore::new(plan.connect_concurrency.max(1)),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_admitted_us: AtomicU64::new(0),
            latency: hist::Shared::new(),
            plan,
        })
    }

    /// Where connection `idx` connects: its node's address.
    pub(crate) fn endpoint(&self, idx: usize) -> &Endpoint {
        &self.endpoints[self.plan.node_of(idx) % self.endpoints.len()]
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.plan.connect_timeout_secs.max(0.1))
    }
}

/// How one connection ended.
#[derive(Debug, Default)]
pub(crate) struct ConnResult {
    /// The node (index into the plan's URLs) the connection was made to.
    pub(crate) node: usize,
    pub(crate) connected: bool,
    /// Why it could not connect or subscribe, or why it broke before the end.
    pub(crate) error: Option<String>,
    pub(crate) tracks: Vec<ChanTrack>,
    pub(crate) first_us: u64,
    pub(crate) last_us: u64,
    pub(crate) gaps: u64,
    pub(crate) unexpected: u64,
}

/// Runs connection `idx` until publishing is over and its messages are in (or the
/// drain time has passed).
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    idx: usize,
    finish: watch::Receiver<Option<Arc<Finish>>>,
) -> ConnResult {
    let fin = Finisher::new(finish);
    let recv = Recv::new(&ctx.plan.channels_of(idx));
    let node = ctx.plan.node_of(idx);
    let mut result = match (ctx.plan.target, ctx.plan.transport) {
        (_, Transport::Ws) => ws::run(ctx, idx, fin, recv).await,
        (_, Transport::Sse) => sse::run(ctx, idx, fin, recv).await,
        (Target::Crier, Transport::Poll) => poll::run(ctx, idx, fin, recv).await,
        (Target::Nchan, Transport::Poll) => nchan_poll::run(ctx, idx, fin, recv).await,
    };
    result.node = node;
    result
}

/// Counts a connection as subscribed (or failed) once, for the ready barrier.
struct Admission<'a> {
    ctx: &'a Ctx,
    done: bool,
}

impl<'a> Admission<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        Self { ctx, done: false }
    }

    fn subscribed(&mut self) {
        if !self.done {
            self.done = true;
            self.ctx.connected.fetch_add(1, Ordering::Relaxed);
            self.ctx
                .last_admitted_us
                .fetch_max(payload::now_micros(), Ordering::Relaxed);
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ctx.failed.fetch_add(1, Ordering::Relaxed);
            self.ctx
                .last_admitted_us
                .fetch_max(payload::now_micros(), Ordering::Relaxed);
        }
    }
}

/// A connection's received messages.
pub(crate) struct Recv {
    tracks: Vec<ChanTrack>,
    latency: Vec<u64>,
    first_us: u64,
    last_us: u64,
    gaps: u64,
    unexpected: u64,
}

impl Recv {
    fn new(channels: &[u32]) -> Self {
        Self {
            tracks: channels.iter().map(|&c| ChanTrack::new(c)).collect(),
            latency: Vec::new(),
            first_us: 0,
            last_us: 0,
            gaps: 0,
            unexpected: 0,
        }
    }

    /// Records every payload found in `text`; returns how many there were.
    fn on_text(&mut self, ctx: &Ctx, text: &[u8]) -> usize {
        let mut at = 0;
        let mut found = 0;
        while let Some((stamp, next)) = payload::find_from(text, at) {
            self.on_stamp(ctx, stamp);
            at = next;
            found += 1;
        }
        found
    }

    fn on_stamp(&mut self, ctx: &Ctx, stamp: Stamp) {
        let now = payload::now_micros();
        let Some(track) = self.tracks.iter_mut().find(|t| t.channel == stamp.channel) else {
            self.unexpected += 1;
            return;
        };
        if track.record(stamp.seq) == Arrival::Duplicate {
            return;
        }
        self.latency.push(now.saturating_sub(stamp.sent_micros));
        if self.latency.len() >= LATENCY_BATCH {
            ctx.latency.merge(&mut self.latency);
        }
        if self.first_us == 0 {
            self.first_us = now;
        }
        self.last_us = now;
        ctx.received.fetch_add(1, Ordering::Relaxed);
    }

    fn complete(&self, finish: &Finish) -> bool {
        self.tracks.iter().all(|t| {
            let published = finish
                .published
                .get(t.channel as usize)
                .copied()
                .unwrap_or(0);
            t.complete(published)
        })
    }

    fn channels(&self) -> impl Iterator<Item = u32> + '_ {
        self.tracks.iter().map(|t| t.channel)
    }

    fn into_result(mut self, ctx: &Ctx, connected: bool, error: Option<String>) -> ConnResult {
        ctx.latency.merge(&mut self.latency);
        ConnResult {
            node: 0,
            connected,
            error,
            tracks: self.tracks,
            first_us: self.first_us,
            last_us: self.last_us,
            gaps: self.gaps,
            unexpected: self.unexpected,
        }
    }
}

/// What the end-of-run signal says when it fires.
pub(crate) enum FinEvent {
    /// Publishing is over; check whether everything arrived.
    Published,
    /// The drain time is over (or the coordinator is gone): stop now.
    Deadline,
}

/// Waits for the end-of-run signal and then for the drain deadline.
pub(crate) struct Finisher {
    rx: watch::Receiver<Option<Arc<Finish>>>,
    finish: Option<Arc<Finish>>,
    deadline: Option<Instant>,
}

impl Finisher {
    fn new(rx: watch::Receiver<Option<Arc<Finish>>>) -> Self {
        Self {
            rx,
            finish: None,
            deadline: None,
        }
    }

    /// Resolves when publishing ends, then (on the next call) at the drain deadline.
    /// Cancel-safe, so it can sit in a `select!` beside a socket read.
    async fn next(&mut self) -> FinEvent {
        if let Some(deadline) = self.deadline {
            tokio::time::sleep_until(deadline).await;
            return FinEvent::Deadline;
        }
        loop {
            if let Some(f) = self.rx.borrow_and_update().clone() {
                self.deadline =
                    Some(Instant::now() + Duration::from_secs_f64(f.drain_secs.max(0.0)));
                self.finish = Some(f);
                return FinEvent::Published;
            }
            if self.rx.changed().await.is_err() {
                return FinEvent::Deadline;
            }
        }
    }

    /// Whether publishing is over and `recv` has every message.
    fn done(&self, recv: &Recv) -> bool {
        self.finish.as_ref().is_some_and(|f| recv.complete(f))
    }
}

/// Short text for an error, for the report's error table.
fn describe(e: &anyhow::Error) -> String {
    let mut s = format!("{e:#}");
    s.truncate(160);
    s
}
