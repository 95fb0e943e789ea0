//! The configuration lifecycle on a running Envoy: a state directory of numbered revisions
//! (`state`), a lock against concurrent writers (`lock`), Envoy's admin interface (`admin`),
//! finding the Envoy binary (`discover`), making a revision live and confirming it (`apply`),
//! and the commands built on them (`up`, `history`, `rollback`, `diff`, `status`).
//!
//! Reusable by other commands (`meshroute canary`): `apply::apply` takes a validated plugin
//! configuration and returns what Envoy did with it.

pub mod admin;
pub mod apply;
pub mod canary;
pub mod commands;
pub mod diff;
pub mod discover;
pub mod hash;
pub mod lock;
pub mod state;
pub mod status;
pub mod up;
