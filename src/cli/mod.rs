//! The binary's commands, one module each: how each one merges its flags
//! over its config file, starts the library's components, prints the
//! lines scripts and tests wait for, and answers signals. Binary-only: the
//! library (`rpcgate::*`) never sees these.

pub(crate) mod demo_app;
pub(crate) mod gateway;
pub(crate) mod locator;
pub(crate) mod logging;
pub(crate) mod resolve;
pub(crate) mod signals;
