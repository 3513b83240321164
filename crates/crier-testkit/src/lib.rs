//! Test support shared by Crier's crates: `redis-server` processes of their own, on
//! free ports, alone or joined as a Redis Cluster. Tests that stop, restart or cut off
//! Redis never touch a Redis that others use.

#![forbid(unsafe_code)]

mod redis_server;

pub use redis_server::{free_port, RedisCluster, RedisServer};
