//! The same cases against every [`Presence`]: members are users, not holders; the
//! member limit refuses new users only; members and counts. A Redis presence joins the
//! fixture list when it exists.

use super::{Joined, MemoryPresence, Presence, PresenceJoin};
use crier_protocol::ChannelName;
use serde_json::json;
use std::sync::Arc;

fn fixtures() -> Vec<(&'static str, Box<dyn Presence>)> {
    vec![("memory", Box::new(MemoryPresence::default()))]
}

fn s(v: &str) -> Arc<str> {
    Arc::from(v)
}

fn member(user: &str, info: serde_json::Value, max_members: usize) -> PresenceJoin {
    PresenceJoin {
        user_id: s(user),
        user_info: info,
        max_members,
    }
}

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

#[test]
fn a_user_joins_once_and_leaves_with_its_last_holder() {
    for (kind, p) in fixtures() {
        let (app, c) = (s("app"), ch("presence-a"));
        let join = |holder: &str, user: &str| {
            p.join(&app, &c, &s(holder), &member(user, json!({"u": user}), 10))
        };
        assert_eq!(join("1.1", "u1"), Joined::NewMember, "{kind}");
        assert_eq!(join("2.1", "u1"), Joined::AnotherConnection, "{kind}");
        assert_eq!(join("1.2", "u2"), Joined::NewMember, "{kind}");
        assert_eq!(
            join("1.2", "u2"),
            Joined::AnotherConnection,
            "{kind}: same holder"
        );
        assert_eq!(p.user_count("app", &c), 2, "{kind}");
        assert_eq!(p.leave("app", &c, "1.1"), None, "{kind}: u1 still on 2.1");
        assert_eq!(p.leave("app", &c, "2.1"), Some(s("u1")), "{kind}");
        assert_eq!(p.leave("app", &c, "2.1"), None, "{kind}: already gone");
        assert_eq!(p.leave("app", &c, "9.9"), None, "{kind}: never joined");
        assert_eq!(
            p.members("app", &c),
            [(s("u2"), json!({"u": "u2"}))],
            "{kind}"
        );
        assert_eq!(p.leave("app", &c, "1.2"), Some(s("u2")), "{kind}");
        assert_eq!(p.user_count("app", &c), 0, "{kind}");
        assert!(p.members("app", &c).is_empty(), "{kind}");
    }
}

#[test]
fn the_member_limit_refuses_new_users_only() {
    for (kind, p) in fixtures() {
        let (app, c) = (s("app"), ch("presence-full"));
        assert!(p.has_room("app", &c, "u1", 1), "{kind}");
        assert!(!p.has_room("app", &c, "u1", 0), "{kind}");
        assert_eq!(
            p.join(&app, &c, &s("1.1"), &member("u1", json!({}), 1)),
            Joined::NewMember
        );
        assert!(!p.has_room("app", &c, "u2", 1), "{kind}");
        assert!(p.has_room("app", &c, "u1", 1), "{kind}: a member has room");
        let refused = p.join(&app, &c, &s("1.2"), &member("u2", json!({}), 1));
        assert_eq!(refused, Joined::Full, "{kind}");
        let again = p.join(&app, &c, &s("1.3"), &member("u1", json!({}), 1));
        assert_eq!(again, Joined::AnotherConnection, "{kind}");
        assert_eq!(
            p.leave("app", &c, "1.2"),
            None,
            "{kind}: a refused join holds nothing"
        );
        assert_eq!(p.user_count("app", &c), 1, "{kind}");
    }
}

#[test]
fn members_are_sorted_and_channels_apart() {
    for (kind, p) in fixtures() {
        let app = s("app");
        for (holder, user) in [("1.1", "b"), ("1.2", "a"), ("1.3", "c")] {
            let joined = p.join(
                &app,
                &ch("presence-x"),
                &s(holder),
                &member(user, json!(null), 10),
            );
            assert_eq!(joined, Joined::NewMember, "{kind}");
        }
        p.join(
            &app,
            &ch("presence-y"),
            &s("1.1"),
            &member("z", json!(null), 10),
        );
        let ids: Vec<Arc<str>> = p
            .members("app", &ch("presence-x"))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [s("a"), s("b"), s("c")], "{kind}");
        assert_eq!(p.user_count("app", &ch("presence-y")), 1, "{kind}");
        assert_eq!(p.user_count("other", &ch("presence-x")), 0, "{kind}");
    }
}
