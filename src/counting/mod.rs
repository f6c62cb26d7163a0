//! What a response counts as: the business rules (`business`: header and JSON body values,
//! counters, sums, histograms, and when a body is read) and gRPC status (`grpc`).

pub mod business;
pub mod grpc;
