//! Cases only a cluster has: nodes that share one Redis.
