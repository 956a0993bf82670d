//! userdrop: a file-drop front end for the shop platform's `users/import` function.
//!
//! A request file flows one way through the modules (see ARCHITECTURE.md):
//! `inbox` (which files) → `request` (parse) → `validate` (rules) → `store` (sled)
//! → `response` (write), with `process` driving one file through them and `cli`
//! wiring the commands.

pub mod backup;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod erase;
pub mod export;
pub mod hooks;
pub mod inbox;
pub mod logs;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod options;
pub mod process;
pub mod request;
pub mod response;
pub mod retention;
pub mod schema;
pub mod store;
pub mod validate;
pub mod version;
pub mod watch;
