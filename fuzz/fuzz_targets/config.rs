//! The TOML config file. Any text: parsing and validation never panic. A config that
//! validates is one the server can run: every timing it adds to the clock fits, and the
//! activity timeout it tells pusher-js fits a JavaScript timer.

#![no_main]

use crier_server::Config;
use libfuzzer_sys::{fuzz_target, Corpus};
use std::time::{Duration, Instant};

/// Longest delay `setTimeout` honours (2^31 - 1 ms); pusher-js fires at once beyond it.
const JS_TIMER_MAX_SECS: u64 = 2_147_483;

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let Ok(config) = Config::from_toml(text) else {
        return Corpus::Keep;
    };
    if config.validate().is_err() {
        return Corpus::Keep;
    }
    let s = &config.server;
    assert!(config.listen_addr().is_ok());
    assert!(!config.apps.is_empty());
    assert!((1..=JS_TIMER_MAX_SECS).contains(&s.activity_timeout_secs));
    let now = Instant::now();
    let fits = |secs: u64| now.checked_add(Duration::from_secs(secs)).is_some();
    for secs in [s.activity_timeout_secs, s.pong_timeout_secs] {
        // Zero would make every connection ping at once, then close for want of a pong.
        assert!(secs > 0 && fits(secs), "{secs} s");
    }
    assert!(fits(s.write_timeout_secs) && fits(s.shutdown_timeout_secs));
    // A long-poll lease ends at now + the request's timeout (capped well under a
    // day) + this grace.
    assert!(fits(s.poll_presence_grace_secs.saturating_add(86_400)));
    Corpus::Keep
});
