//! Cluster DNS, served by every agent for the pods of its node.
pub mod zone;
