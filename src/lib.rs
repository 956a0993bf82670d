//! userdrop: a file-drop front end for the shop platform's `users/import` function.
//!
//! A request file flows one way through the modules (see ARCHITECTURE.md):
//! `request` (parse) → `validate` (rules) → `store` (sled) → `response` (write),
//! with `process` driving one file through them and `cli` wiring commands.

pub mod messages;
pub mod model;
pub mod request;
pub mod validate;
