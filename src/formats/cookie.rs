//! Lenient `Cookie` header parsing (RFC 6265 §5.4 as browsers and real clients send it).
//!
//! Works on raw bytes and never allocates: the value returned borrows from the header. Accepts
//! what real traffic carries: `;` with or without spaces, tabs, pairs without `=` (skipped),
//! empty values, quoted values (`"abc"` yields `abc`), hundreds of pairs, bytes that are not UTF-8.
//! Unusable input simply yields no value.

/// Optional whitespace around pairs, names and values.
fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Strips one pair of surrounding double quotes (RFC 6265 allows `cookie-value = DQUOTE *cookie-octet DQUOTE`).
fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

/// The value of the first cookie called `name` (exact, case-sensitive) in one `Cookie` header
/// value, or `None` when absent. An empty value is returned as `Some(b"")`; callers treat it as
/// "no key". When Envoy coalesces several `Cookie` headers it joins them with `"; "`, which this
/// parser reads like any other separator.
pub fn find<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if name.is_empty() {
        return None;
    }
    header.split(|&c| c == b';').find_map(|pair| {
        let eq = pair.iter().position(|&c| c == b'=')?;
        let (n, v) = pair.split_at(eq);
        if trim(n) == name {
            Some(unquote(trim(v.get(1..).unwrap_or_default())))
        } else {
            None
        }
    })
}

/// Like [`find`], across several `Cookie` header values (first occurrence wins).
pub fn find_in<'a, I>(headers: I, name: &[u8]) -> Option<&'a [u8]>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    headers.into_iter().find_map(|h| find(h, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (Cookie header, cookie name, expected value)
    type Case = (&'static [u8], &'static str, Option<&'static [u8]>);

    #[test]
    fn table() {
        let cases: &[Case] = &[
            (b"session_id=abc", "session_id", Some(b"abc")),
            (b"a=1; session_id=abc; b=2", "session_id", Some(b"abc")),
            (b"a=1;session_id=abc;b=2", "session_id", Some(b"abc")),
            (b"  session_id  =  abc  ", "session_id", Some(b"abc")),
            (b"\tsession_id=abc\t;x=1", "session_id", Some(b"abc")),
            (b"session_id=\"abc\"", "session_id", Some(b"abc")),
            (b"session_id=\"\"", "session_id", Some(b"")),
            (b"session_id=\"abc", "session_id", Some(b"\"abc")),
            (b"session_id=\"", "session_id", Some(b"\"")),
            (b"session_id=", "session_id", Some(b"")),
            (b"session_id=;session_id=second", "session_id", Some(b"")),
            (
                b"session_id=first; session_id=second",
                "session_id",
                Some(b"first"),
            ),
            (b"Session_Id=abc", "session_id", None),
            (b"xsession_id=abc", "session_id", None),
            (b"session_idx=abc", "session_id", None),
            (b"session_id", "session_id", None),
            (b"junk; session_id; session_id=v", "session_id", Some(b"v")),
            (b"a=b=c; session_id=x=y", "session_id", Some(b"x=y")),
            (b"", "session_id", None),
            (b";;;", "session_id", None),
            (b"=;=;=", "session_id", None),
            (b"=abc", "", None),
            (b"session_id=\xff\xfe", "session_id", Some(b"\xff\xfe")),
            (b"\xff=\x00; session_id=ok", "session_id", Some(b"ok")),
            (b"a=1, session_id=comma", "session_id", None),
        ];
        for (header, name, want) in cases {
            assert_eq!(
                find(header, name.as_bytes()),
                *want,
                "{:?} / {name}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn hundreds_of_cookies() {
        let mut h = Vec::new();
        for i in 0..1000 {
            h.extend_from_slice(format!("c{i}=v{i}; ").as_bytes());
        }
        h.extend_from_slice(b"session_id=last");
        assert_eq!(find(&h, b"session_id"), Some(&b"last"[..]));
        assert_eq!(find(&h, b"c999"), Some(&b"v999"[..]));
        assert_eq!(find(&h, b"c1000"), None);
    }

    #[test]
    fn several_headers() {
        let headers: [&[u8]; 3] = [b"a=1", b"session_id=two", b"session_id=three"];
        assert_eq!(find_in(headers, b"session_id"), Some(&b"two"[..]));
        assert_eq!(find_in(headers, b"zzz"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_borrows_from_input(header in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                               name in "[a-z_]{0,8}") {
            if let Some(v) = find(&header, name.as_bytes()) {
                // the value is a sub-slice of the header
                let start = v.as_ptr() as usize;
                let base = header.as_ptr() as usize;
                proptest::prop_assert!(start >= base && start + v.len() <= base + header.len());
            }
        }

        #[test]
        fn finds_what_was_written(names in proptest::collection::vec("[a-z]{1,6}", 1..20),
                                  value in "[A-Za-z0-9._-]{0,20}") {
            let target = "target_cookie";
            let mut h = names.iter().map(|n| format!("{n}=x")).collect::<Vec<_>>();
            h.insert(names.len() / 2, format!("{target}={value}"));
            let header = h.join("; ");
            proptest::prop_assert_eq!(find(header.as_bytes(), target.as_bytes()), Some(value.as_bytes()));
        }
    }
}
