//! Conformance guest: `GET /run` runs [`behaviour::handle`]'s fixed script against every
//! host capability and answers each step's outcome. The end-to-end test runs the same
//! script natively against `palisade_sdk::testing::TestHost` and compares the answers.

mod behaviour;

palisade_sdk::export_handler!(behaviour::handle);
