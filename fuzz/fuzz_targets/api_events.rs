//! `POST /apps/{id}/events` and `batch_events` bodies, through the same parsing and
//! validation as the handlers. What is accepted must obey every limit the API
//! promises: one message per named channel, valid names, bounded sizes.

#![no_main]

use crier_core::message::NewMessage;
use crier_core::publish::{valid_socket_id, BatchRequest, EventRequest, MAX_EVENT_NAME_LEN};
use crier_core::App;
use crier_protocol::ChannelName;
use libfuzzer_sys::fuzz_target;

fn channels_named(req: &EventRequest) -> usize {
    req.channels
        .as_ref()
        .map_or(usize::from(req.channel.is_some()), Vec::len)
}

fn check(app: &App, req: EventRequest) {
    let named = channels_named(&req);
    let Ok(messages) = req.into_messages(app) else {
        return;
    };
    assert_eq!(messages.len(), named);
    assert!(!messages.is_empty() && messages.len() <= app.limits.max_channels_per_event);
    for m in &messages {
        check_message(app, m);
    }
}

fn check_message(app: &App, m: &NewMessage) {
    assert_eq!(m.app_id, app.id);
    assert!(!m.event.is_empty() && m.event.len() <= MAX_EVENT_NAME_LEN);
    assert!(m.data.len() <= app.limits.max_event_size);
    assert_eq!(
        ChannelName::parse(m.channel.as_str()).as_ref(),
        Ok(&m.channel)
    );
    if let Some(s) = &m.exclude_socket {
        assert!(valid_socket_id(s), "socket_id {s:?}");
    }
}

fn app() -> App {
    let mut app = App::new("1", "key", "secret");
    // Small limits so the fuzzer reaches them.
    app.limits.max_event_size = 64;
    app.limits.max_channels_per_event = 3;
    app.limits.max_batch_size = 3;
    app
}

fuzz_target!(|body: &[u8]| {
    let app = app();
    if let Ok(req) = serde_json::from_slice::<EventRequest>(body) {
        check(&app, req);
    }
    if let Ok(batch) = serde_json::from_slice::<BatchRequest>(body) {
        if batch.check_size(&app).is_ok() {
            assert!(batch.batch.len() <= app.limits.max_batch_size);
            for req in batch.batch {
                check(&app, req);
            }
        } else {
            assert!(batch.batch.len() > app.limits.max_batch_size);
        }
    }
});
