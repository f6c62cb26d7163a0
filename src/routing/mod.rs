//! Who goes where. The published algorithm (`hash`: MurmurHash3 of salt ‖ key, the position and
//! the cohort bucket), the decision and its reasons (`decision`), stage zero's override and
//! pins (`stage`, `pinset`), the cookies the filter sets (`cookies`: the anonymous session and
//! the idle hold; `flow`: the signed flow cookie) and which service a request is (`matcher`).

pub mod cookies;
pub mod decision;
pub mod flow;
pub mod hash;
pub mod matcher;
pub mod pinset;
pub mod stage;
