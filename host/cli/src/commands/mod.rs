//! One module per group of commands.

pub mod author;
pub mod registry;
pub mod secrets;
pub mod up;
