//! One module per group of commands.

pub mod admin_client;
pub mod author;
pub mod gateway;
pub mod policy;
pub mod registry;
pub mod runner;
pub mod secrets;
pub mod serve;
pub mod up;
