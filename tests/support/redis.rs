//! Real Redis servers for the replay store's tests: the runbook's own ([`runbook::redis`]), the
//! one implementation the scorecard's replay store scenarios use too. `make test` installs the
//! package (scripts/install-redis.sh).

pub use runbook::redis::{RedisCluster, RedisServer, free_port};
