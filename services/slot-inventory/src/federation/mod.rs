//! What member hospitals do through the federation API (the gateway checks
//! their credentials and forwards here): publish schedules, stop a clinic
//! (停诊), record visit progress, and poll a feed of booking changes.

pub mod feed;
pub mod publish;
pub mod stop;
pub mod visits;
