//! Byte-level readers, leaves of the crate: the `Cookie` header, exact scaled decimals, the
//! proxy-wasm header-map wire format, lowercase hex, and JSON (the scanner the config reader shares, JSON
//! Pointer extraction without a DOM).

pub mod cookie;
pub mod decimal;
pub mod headers;
pub mod hex;
pub mod json;
