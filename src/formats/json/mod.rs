//! Lean JSON reading without a DOM: [`find`] extracts one value by JSON Pointer (RFC 6901) from a
//! response body, and the `Scanner` under it is also the tokenizer of the configuration reader
//! (`crate::config::de`), so both accept the same strings, numbers and literals.
//!
//! - `scanner`: the byte cursor (whitespace, strings, numbers, literals, skipping subtrees with a
//!   128-bit stack, never recursing), [`Value`], [`Kind`], [`JsonError`] and string unescaping;
//! - `number`: a JSON number as `f64` ([`decimal_f64`]), for the config reader and Prometheus
//!   answers;
//! - `pointer`: compiled pointers ([`Pointer`]), [`find`], the walk along a pointer's path, and
//!   [`locate_all`], one walk for several pointers (the filter's JSON rules).

mod number;
mod pointer;
mod scanner;
mod unescape;

pub use number::decimal_f64;
pub use pointer::{find, locate, locate_all, Found, Pointer, PointerError};
pub(crate) use scanner::{name_matches, Scanner};
pub use scanner::{JsonError, Kind, Value, MAX_DEPTH};

#[cfg(test)]
mod tests;
