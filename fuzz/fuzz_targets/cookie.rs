//! `cookie::find(header, name)` and `cookie::find_in(headers, name)`.
//!
//! Checks: never panics; a value is a sub-slice of the header and equals what an independent
//! reading of the contract gives (first pair, split on `;`, whose name — text before the first
//! `=`, spaces and tabs trimmed — equals `name`; its value trimmed and stripped of one pair of
//! double quotes); a name that cannot occur in a trimmed pair name is never found;
//! `find_in` over the header split at arbitrary `;` separators, and over arbitrary header lists,
//! gives the first occurrence, exactly like `find` on those headers joined with `"; "` (how Envoy
//! coalesces several `Cookie` headers).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sticky_canary::formats::cookie::{find, find_in};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    name: &'a [u8],
    header: &'a [u8],
    /// Which `;` separators of `header` to split at, as a bit mask per separator.
    splits: Vec<bool>,
    /// Extra headers for the list checks.
    others: Vec<&'a [u8]>,
}

fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// The contract, by index arithmetic rather than slice patterns.
fn reference(header: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    if name.is_empty() {
        return None;
    }
    let mut start = 0;
    while start <= header.len() {
        let end = header[start..]
            .iter()
            .position(|&c| c == b';')
            .map_or(header.len(), |p| start + p);
        let pair = &header[start..end];
        if let Some(eq) = pair.iter().position(|&c| c == b'=') {
            let (mut a, mut b) = (0, eq);
            while a < b && is_ows(pair[a]) {
                a += 1;
            }
            while b > a && is_ows(pair[b - 1]) {
                b -= 1;
            }
            if &pair[a..b] == name {
                let (mut a, mut b) = (eq + 1, pair.len());
                while a < b && is_ows(pair[a]) {
                    a += 1;
                }
                while b > a && is_ows(pair[b - 1]) {
                    b -= 1;
                }
                if b - a >= 2 && pair[a] == b'"' && pair[b - 1] == b'"' {
                    a += 1;
                    b -= 1;
                }
                return Some(pair[a..b].to_vec());
            }
        }
        start = end + 1;
    }
    None
}

fn within(buf: &[u8], s: &[u8]) -> bool {
    let base = buf.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    p >= base && p + s.len() <= base + buf.len()
}

fn join(headers: &[&[u8]]) -> Vec<u8> {
    headers.join(&b"; "[..])
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let Input {
        name,
        header,
        splits,
        others,
    } = input;

    let got = find(header, name);
    if let Some(v) = got {
        assert!(within(header, v), "value not borrowed from the header");
        assert!(!v.contains(&b';'));
    }
    assert_eq!(
        got.map(<[u8]>::to_vec),
        reference(header, name),
        "find disagrees with the contract"
    );
    // Names that cannot be a trimmed pair name are never found.
    if name.is_empty()
        || name.contains(&b';')
        || name.contains(&b'=')
        || name.first().is_some_and(|&c| is_ows(c))
        || name.last().is_some_and(|&c| is_ows(c))
    {
        assert_eq!(got, None);
    }

    // Split the header at the chosen `;` separators (dropping them): same pairs, same answer.
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut sep = 0;
    for (i, &c) in header.iter().enumerate() {
        if c == b';' {
            if splits.get(sep).copied().unwrap_or(false) {
                pieces.push(&header[start..i]);
                start = i + 1;
            }
            sep += 1;
        }
    }
    pieces.push(&header[start..]);
    let split = find_in(pieces.iter().copied(), name);
    assert_eq!(split, got, "find_in over the split header");
    if let Some(v) = split {
        assert!(within(header, v));
    }

    // A list of headers: the first header holding the cookie wins, as if joined with "; ".
    let mut list: Vec<&[u8]> = vec![header];
    list.extend(others.iter().copied());
    let first = list.iter().find_map(|h| find(h, name));
    let listed = find_in(list.iter().copied(), name);
    assert_eq!(listed, first, "find_in is not first-occurrence");
    if let Some(v) = listed {
        assert!(list.iter().any(|h| within(h, v)));
    }
    assert_eq!(
        listed.map(<[u8]>::to_vec),
        find(&join(&list), name).map(<[u8]>::to_vec),
        "find_in differs from find on the coalesced header"
    );
    assert_eq!(find_in(std::iter::empty(), name), None);
});
