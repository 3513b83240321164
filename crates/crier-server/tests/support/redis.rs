//! Private `redis-server` processes (and Redis Clusters) for tests that stop, restart
//! or cut off Redis: shared with the other crates' tests.

#[allow(unused_imports)]
pub use crier_testkit::{RedisCluster, RedisServer};
