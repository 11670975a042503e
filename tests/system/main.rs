//! System tests: real gateway and slot-inventory services on random ports,
//! real PostgreSQL and Redis, a fresh database and key prefix per test.

mod access;
mod accounting;
mod bad_input;
mod booking_admission;
mod booking_failures;
mod booking_owner;
mod booking_path;
mod booking_surge;
mod console_relay;
mod contract;
mod delivery_faults;
mod family_doctor;
mod faults;
mod federation;
mod fhir;
mod full_slot_queue;
mod gateway_auth;
mod gateway_identity;
mod gateway_limits;
mod gateway_notices;
mod gateway_notifications;
mod gateway_openapi;
mod gateway_payments;
mod gateway_routing;
mod gateway_search;
mod lottery;
mod patient_actions;
mod patient_services;
mod precise_appointment;
mod redis_cluster;
mod refunds;
mod sold_out_marks;
mod survey;
mod tracing;
mod trust_boundary;
