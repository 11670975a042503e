//! Integration tests: each test starts channel-accounting on a random port
//! against its own fresh PostgreSQL database and Redis key prefix, and
//! writes events straight into the Redis streams with XADD.

mod control_room;
mod events;
mod helpers;
mod operators;
mod reconciliation;
mod surveys;
