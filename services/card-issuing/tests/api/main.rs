//! Integration tests: each test starts card-issuing on a random port
//! against its own fresh PostgreSQL database and Redis key prefix.

mod appeals;
mod booking_refunds;
mod cards;
mod family;
mod helpers;
mod ledger;
mod ops;
mod registration;
mod standing;
