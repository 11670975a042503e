//! The slot domain against real PostgreSQL and Redis: each test connects a
//! hospital to a fresh database and Redis prefix, with time from a manual
//! clock so release times, hold deadlines, cancellation deadlines, check-in
//! windows and no-shows are reached by moving the clock, never by sleeping.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a failed test"
)]

mod baseline;
mod check_in_batches;
mod federation;
mod fhir;
mod fhir_ops;
mod fhir_props;
mod helpers;
mod http;
mod invariants;
mod lifecycle;
mod payment_batches;
mod pools;
mod relay;
mod rules;
mod visit_facts;
mod waitlist;
mod writer;
