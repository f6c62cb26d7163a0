//! The trip record kept in Envoy's shared data: who is tripped, for which generation.

/// The generation of a plan's trips: changes with the salt or `guard.epoch`, so that either
/// clears every trip (FNV-1a 64 over the salt, then the epoch's bytes).
pub fn generation(salt: &[u8], epoch: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in salt.iter().chain(epoch.to_le_bytes().iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `sticky-canary-guard/1 <generation hex> <version> <version>…`.
pub fn encode<'a>(generation: u64, tripped: impl Iterator<Item = &'a str>) -> String {
    let mut s = format!("sticky-canary-guard/1 {generation:016x}");
    for v in tripped {
        s.push(' ');
        s.push_str(v);
    }
    s
}

/// The tripped versions of `generation`; `None` when the record is of another generation,
/// another format, or not text.
pub fn read(bytes: &[u8], generation: u64) -> Option<Vec<&str>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut words = text.split(' ');
    let gen = format!("{generation:016x}");
    match (words.next(), words.next()) {
        (Some("sticky-canary-guard/1"), Some(g)) if g == gen => {
            Some(words.filter(|w| !w.is_empty()).collect())
        }
        _ => None,
    }
}

/// The tripped versions of `generation`; none when the record is not of it ([`read`]).
pub fn decode(bytes: &[u8], generation: u64) -> Vec<&str> {
    read(bytes, generation).unwrap_or_default()
}
