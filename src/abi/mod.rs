//! The one adapter to the proxy-wasm ABI: Envoy's callbacks (the `proxy_on_*` exports) forwarded
//! to [`crate::filter`], and [`Envoy`], the filter's [`Host`] made of panic-free bindings to the
//! few host calls it makes.
//!
//! No SDK: the proxy-wasm Rust SDK's dispatcher (its context maps, trait objects with every
//! default method, thread-locals, logger) was a sixth of the module's code, which V8 compiles
//! before Envoy is ready, it panics on an unknown context id, and it exports every callback, so
//! Envoy crossed into the VM for request bodies and trailers the filter ignores. Here every
//! status is an `Err`, every buffer is decoded with bounds checks ([`crate::formats::headers`]), and an
//! unknown context is ignored. Buffers the host returns were allocated through
//! `proxy_on_memory_allocate` (a boxed `[u8]` of exactly the returned size), which is why
//! `Vec::from_raw_parts(p, n, n)` takes ownership of them soundly.
//!
//! - `exports`: the `proxy_on_*` callbacks and the VM's contexts (roots and streams by id);
//! - `envoy`: [`envoy::Envoy`], the filter's `Host`, one binding per method;
//! - `imports`: the host functions Envoy provides (`proxy_*`) and the bindings that turn their
//!   statuses into `Result`s and take ownership of the buffers they return.
#![allow(unsafe_code)]

mod envoy;
mod exports;
mod imports;
#[cfg(test)]
mod tests;
