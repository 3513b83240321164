//! The same cases against every [`Presence`]: members are users, not holders; the
//! member limit refuses new users only; members and counts. They run on the memory
//! presence and the Redis one, on one redis-server and on a Redis Cluster.

use super::{Joined, MemoryPresence, Presence, PresenceJoin};
use crier_protocol::ChannelName;
use serde_json::json;
use std::sync::Arc;

/// A presence and what keeps it running (the Redis broker and processes).
type Fixture = (
    Box<dyn Presence>,
    Option<Box<dyn std::any::Any + Send + Sync>>,
);

async fn fixtures() -> Vec<(&'static str, Fixture)> {
    let mut out: Vec<(&'static str, Fixture)> =
        vec![("memory", (Box::new(MemoryPresence::default()), None))];
    for (kind, target, guard) in crate::redis::testing::deployments() {
        let (broker, presence) = crate::redis::testing::node(
            &crate::redis::testing::settings(&target),
            &crate::redis::testing::apps(),
            crate::history::Retention::default(),
            Arc::new(crate::hub::Hub::new()),
            None,
        )
        .await;
        out.push((kind, (Box::new(presence), Some(Box::new((broker, guard))))));
    }
    out
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

#[tokio::test]
async fn a_user_joins_once_and_leaves_with_its_last_holder() {
    for (kind, (p, _keep)) in fixtures().await {
        let (app, c) = (s("app"), ch("presence-a"));
        let join = |holder: &str, user: &str| {
            let (holder, m) = (s(holder), member(user, json!({"u": user}), 10));
            let (p, app, c) = (&p, &app, &c);
            async move { p.join(app, c, &holder, &m).await }
        };
        assert_eq!(
            join("1.1", "u1").await.unwrap(),
            Joined::NewMember,
            "{kind}"
        );
        assert_eq!(
            join("2.1", "u1").await.unwrap(),
            Joined::AnotherConnection,
            "{kind}"
        );
        assert_eq!(
            join("1.2", "u2").await.unwrap(),
            Joined::NewMember,
            "{kind}"
        );
        assert_eq!(
            join("1.2", "u2").await.unwrap(),
            Joined::AnotherConnection,
            "{kind}: same holder"
        );
        assert_eq!(p.user_count("app", &c).await, 2, "{kind}");
        assert_eq!(
            p.leave("app", &c, "1.1").await,
            None,
            "{kind}: u1 still on 2.1"
        );
        assert_eq!(p.leave("app", &c, "2.1").await, Some(s("u1")), "{kind}");
        assert_eq!(
            p.leave("app", &c, "2.1").await,
            None,
            "{kind}: already gone"
        );
        assert_eq!(
            p.leave("app", &c, "9.9").await,
            None,
            "{kind}: never joined"
        );
        assert_eq!(
            p.members("app", &c).await,
            [(s("u2"), json!({"u": "u2"}))],
            "{kind}"
        );
        assert_eq!(p.leave("app", &c, "1.2").await, Some(s("u2")), "{kind}");
        assert_eq!(p.user_count("app", &c).await, 0, "{kind}");
        assert!(p.members("app", &c).await.is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn the_member_limit_refuses_new_users_only() {
    for (kind, (p, _keep)) in fixtures().await {
        let (app, c) = (s("app"), ch("presence-full"));
        assert!(p.has_room("app", &c, "u1", 1).await, "{kind}");
        assert!(!p.has_room("app", &c, "u1", 0).await, "{kind}");
        assert_eq!(
            p.join(&app, &c, &s("1.1"), &member("u1", json!({}), 1))
                .await
                .unwrap(),
            Joined::NewMember
        );
        assert!(!p.has_room("app", &c, "u2", 1).await, "{kind}");
        assert!(
            p.has_room("app", &c, "u1", 1).await,
            "{kind}: a member has room"
        );
        let refused = p
            .join(&app, &c, &s("1.2"), &member("u2", json!({}), 1))
            .await
            .unwrap();
        assert_eq!(refused, Joined::Full, "{kind}");
        let again = p
            .join(&app, &c, &s("1.3"), &member("u1", json!({}), 1))
            .await
            .unwrap();
        assert_eq!(again, Joined::AnotherConnection, "{kind}");
        assert_eq!(
            p.leave("app", &c, "1.2").await,
            None,
            "{kind}: a refused join holds nothing"
        );
        assert_eq!(p.user_count("app", &c).await, 1, "{kind}");
    }
}

#[tokio::test]
async fn members_are_sorted_and_channels_apart() {
    for (kind, (p, _keep)) in fixtures().await {
        let app = s("app");
        for (holder, user) in [("1.1", "b"), ("1.2", "a"), ("1.3", "c")] {
            let (c, holder, m) = (ch("presence-x"), s(holder), member(user, json!(null), 10));
            let joined = p.join(&app, &c, &holder, &m).await.unwrap();
            assert_eq!(joined, Joined::NewMember, "{kind}");
        }
        p.join(
            &app,
            &ch("presence-y"),
            &s("1.1"),
            &member("z", json!(null), 10),
        )
        .await
        .unwrap();
        let ids: Vec<Arc<str>> = p
            .members("app", &ch("presence-x"))
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [s("a"), s("b"), s("c")], "{kind}");
        assert_eq!(p.user_count("app", &ch("presence-y")).await, 1, "{kind}");
        assert_eq!(p.user_count("other", &ch("presence-x")).await, 0, "{kind}");
    }
}
