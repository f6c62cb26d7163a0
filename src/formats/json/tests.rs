use super::*;
use proptest::prelude::*;
use std::borrow::Cow;

fn ptr(text: &str) -> Pointer {
    Pointer::parse(text).unwrap()
}

/// What [`get`] reports: the kind and raw text of the value found.
type Got<'a> = Result<Option<(Kind, &'a str)>, JsonError>;

fn get<'a>(doc: &'a str, pointer: &str) -> Got<'a> {
    find(doc.as_bytes(), &ptr(pointer))
        .map(|found| found.map(|v| (v.kind, std::str::from_utf8(v.raw).unwrap())))
}

#[test]
fn pointer_parse() {
    let ok: &[(&str, &[&[u8]])] = &[
        ("", &[]),
        ("/", &[b""]),
        ("//", &[b"", b""]),
        ("/foo", &[b"foo"]),
        ("/foo/0", &[b"foo", b"0"]),
        ("/a~1b", &[b"a/b"]),
        ("/m~0n", &[b"m~n"]),
        ("/~01", &[b"~1"]),
        ("/~10", &[b"/0"]),
        ("/~0~1", &[b"~/"]),
        ("/foo/", &[b"foo", b""]),
        ("/ ", &[b" "]),
        ("/é", &["é".as_bytes()]),
    ];
    for &(text, want) in ok {
        let p = ptr(text);
        assert_eq!(p.tokens().collect::<Vec<_>>(), want.to_vec(), "{text:?}");
    }
    let bad: &[(&str, PointerError)] = &[
        ("a/b", PointerError::MustStartWithSlash),
        ("a", PointerError::MustStartWithSlash),
        (" /a", PointerError::MustStartWithSlash),
        ("#/a", PointerError::MustStartWithSlash),
        ("/~2", PointerError::BadEscape),
        ("/a~", PointerError::BadEscape),
        ("/~", PointerError::BadEscape),
        ("/~/", PointerError::BadEscape),
        ("/ok/~a", PointerError::BadEscape),
    ];
    for (text, want) in bad {
        assert_eq!(Pointer::parse(text).as_ref(), Err(want), "{text:?}");
        assert!(!want.to_string().is_empty());
    }
}

const RFC6901: &str = r#"
   {
  "foo": ["bar", "baz"],
  "": 0,
  "a/b": 1,
  "c%d": 2,
  "e^f": 3,
  "g|h": 4,
  "i\\j": 5,
  "k\"l": 6,
  " ": 7,
  "m~n": 8
   }
"#;

#[test]
fn rfc6901_example() {
    use Kind::*;
    let whole = RFC6901.trim();
    let cases: &[(&str, Kind, &str)] = &[
        ("", Object, whole),
        ("/foo", Array, r#"["bar", "baz"]"#),
        ("/foo/0", String, "bar"),
        ("/foo/1", String, "baz"),
        ("/", Number, "0"),
        ("/a~1b", Number, "1"),
        ("/c%d", Number, "2"),
        ("/e^f", Number, "3"),
        ("/g|h", Number, "4"),
        ("/i\\j", Number, "5"),
        ("/k\"l", Number, "6"),
        ("/ ", Number, "7"),
        ("/m~0n", Number, "8"),
    ];
    for &(pointer, kind, raw) in cases {
        assert_eq!(get(RFC6901, pointer), Ok(Some((kind, raw))), "{pointer:?}");
    }
    for missing in [
        "/foo/2", "/foo/-", "/foo/01", "/foo/x", "/bar", "/a~1b/c", "/foo/0/0", "/i~1j", "/m~0n~0",
    ] {
        assert_eq!(get(RFC6901, missing), Ok(None), "{missing:?}");
    }
}

const ORDER: &str = r#"{
    "order": {"id": "A-1", "currency": "EUR", "tax": 3.99, "total": "23.98"},
    "items": [
        {"sku": "x", "price": 1.00, "tags": ["a", {"deep": [1, 2, {"x": null}]}]},
        {"sku": "y", "price": 2},
        {"sku": "z", "price": 19.99, "qty": 1}
    ],
    "authorization": {"status": "APPROVED", "reasons": [], "meta": {}},
    "flags": [true, false, null, -0, 1.5e3, -2.5E-3, 0.0, 1e+2],
    "escaped\/name": "slash",
    "\u0041\u00e9": "unicode name",
    "dup": 1,
    "dup": 2,
    "text": "a\"b\\c\/d\b\f\n\r\tE\u00e9\ud83d\ude00"
}"#;

#[test]
fn nested_paths() {
    use Kind::*;
    let cases: &[(&str, Option<(Kind, &str)>)] = &[
        ("/order/tax", Some((Number, "3.99"))),
        ("/order/total", Some((String, "23.98"))),
        ("/order/id", Some((String, "A-1"))),
        ("/items/2/price", Some((Number, "19.99"))),
        ("/items/0/price", Some((Number, "1.00"))),
        ("/items/1/price", Some((Number, "2"))),
        ("/items/0/tags/1/deep/2/x", Some((Null, "null"))),
        ("/items/0/tags/1/deep/2", Some((Object, r#"{"x": null}"#))),
        ("/authorization/status", Some((String, "APPROVED"))),
        ("/authorization/reasons", Some((Array, "[]"))),
        ("/authorization/meta", Some((Object, "{}"))),
        ("/flags/0", Some((True, "true"))),
        ("/flags/1", Some((False, "false"))),
        ("/flags/2", Some((Null, "null"))),
        ("/flags/3", Some((Number, "-0"))),
        ("/flags/4", Some((Number, "1.5e3"))),
        ("/flags/5", Some((Number, "-2.5E-3"))),
        ("/flags/6", Some((Number, "0.0"))),
        ("/flags/7", Some((Number, "1e+2"))),
        ("/escaped~1name", Some((String, "slash"))),
        ("/Aé", Some((String, "unicode name"))),
        ("/dup", Some((Number, "1"))),
        // Missing paths.
        ("/items/3/price", None),
        ("/items/2/cost", None),
        ("/order/tax/amount", None),
        ("/order/id/0", None),
        ("/authorization/reasons/0", None),
        ("/authorization/meta/x", None),
        ("/flags/8", None),
        ("/flags/-", None),
        ("/flags/00", None),
        ("/flags/+1", None),
        ("/flags/18446744073709551616000", None),
        ("/nope", None),
        ("/escaped\\/name", None),
    ];
    for &(pointer, want) in cases {
        assert_eq!(get(ORDER, pointer), Ok(want), "{pointer:?}");
    }
}

#[test]
fn value_text() {
    let v = find(ORDER.as_bytes(), &ptr("/text")).unwrap().unwrap();
    assert_eq!(v.kind, Kind::String);
    assert_eq!(v.raw, br#"a\"b\\c\/d\b\f\n\r\tE\u00e9\ud83d\ude00"#);
    assert_eq!(
        v.text().unwrap().as_ref(),
        "a\"b\\c/d\u{8}\u{c}\n\r\tEé😀".as_bytes()
    );

    let borrowed = find(ORDER.as_bytes(), &ptr("/order/total"))
        .unwrap()
        .unwrap();
    assert!(matches!(borrowed.text(), Some(Cow::Borrowed(b"23.98"))));
    let number = find(ORDER.as_bytes(), &ptr("/order/tax")).unwrap().unwrap();
    assert!(matches!(number.text(), Some(Cow::Borrowed(b"3.99"))));

    let s = |raw: &'static [u8]| Value {
        kind: Kind::String,
        raw,
    };
    let cases: &[(&[u8], Option<&[u8]>)] = &[
        (b"", Some(b"")),
        (b"plain", Some(b"plain")),
        (b"\xff\xfe", Some(b"\xff\xfe")),
        (br"\ud83d\ude00", Some("😀".as_bytes())),
        (br"\uD83D\uDE00", Some("😀".as_bytes())),
        (br"x\u0000y", Some(b"x\0y")),
        (br"\u20ac", Some("€".as_bytes())),
        (br"\uFFFF", Some("\u{ffff}".as_bytes())),
        (br"\ud83d", None),
        (br"\ud83dx", None),
        (br"\ud83d\u0041", None),
        (br"\ud83d\n", None),
        (br"\ude00", None),
        (br"\ude00\ud83d", None),
        (br"\u12", None),
        (br"\u12G4", None),
        (br"\x", None),
        (br"\", None),
        (br"ok\", None),
        (br"\'", None),
    ];
    for &(raw, want) in cases {
        assert_eq!(
            s(raw).text().as_deref(),
            want,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Non-strings are returned as they are, even if they contain backslashes.
    let odd = Value {
        kind: Kind::Object,
        raw: br#"{"a":"\n"}"#,
    };
    assert_eq!(odd.text().as_deref(), Some(&br#"{"a":"\n"}"#[..]));
}

#[test]
fn escaped_member_names() {
    let doc = r#"{"a\/b": 1, "\u007e": 2, "t\u00e9": 3, "\"q\"": 4, "bad\ud800": 5, "bad": 6, "x\ty": 7}"#;
    let cases: &[(&str, Option<(Kind, &str)>)] = &[
        ("/a~1b", Some((Kind::Number, "1"))),
        ("/~0", Some((Kind::Number, "2"))),
        ("/té", Some((Kind::Number, "3"))),
        ("/\"q\"", Some((Kind::Number, "4"))),
        ("/bad", Some((Kind::Number, "6"))),
        ("/x\ty", Some((Kind::Number, "7"))),
        ("/a\\/b", None),
        ("/t", None),
    ];
    for &(pointer, want) in cases {
        assert_eq!(get(doc, pointer), Ok(want), "{pointer:?}");
    }
}

#[test]
fn whole_document_and_whitespace() {
    let cases: &[(&str, Option<(Kind, &str)>)] = &[
        ("  \r\n\t{\"a\":1}\n ", Some((Kind::Object, "{\"a\":1}"))),
        ("123", Some((Kind::Number, "123"))),
        (" -0 ", Some((Kind::Number, "-0"))),
        ("\"s\"", Some((Kind::String, "s"))),
        ("true", Some((Kind::True, "true"))),
        ("null\n", Some((Kind::Null, "null"))),
        ("[ ]", Some((Kind::Array, "[ ]"))),
    ];
    for &(doc, want) in cases {
        assert_eq!(get(doc, ""), Ok(want), "{doc:?}");
    }
    assert_eq!(
        get(" { \"a\" : [ 1 , { \"b\" : 2 } ] } ", "/a/1/b"),
        Ok(Some((Kind::Number, "2")))
    );
}

#[test]
fn malformed_documents() {
    use JsonError::*;
    let cases: &[(&str, &str, Got)] = &[
        ("", "", Err(Truncated)),
        ("   ", "/a", Err(Truncated)),
        ("{\"a\":", "/a", Err(Truncated)),
        ("{\"a\":", "/b", Err(Truncated)),
        ("{\"a\" 1}", "/a", Err(Syntax)),
        ("{\"a\" 1}", "/b", Err(Syntax)),
        ("[1,]", "/1", Err(Syntax)),
        ("[1,]", "/5", Err(Syntax)),
        ("[1,]", "", Err(Syntax)),
        ("[1 2]", "/1", Err(Syntax)),
        ("{\"a\":1,}", "/b", Err(Syntax)),
        ("{,}", "/a", Err(Syntax)),
        ("{\"a\":1 \"b\":2}", "/b", Err(Syntax)),
        ("{\"a\":\"unterminated", "/a", Err(Truncated)),
        ("{\"a\":\"unterminated", "/b", Err(Truncated)),
        ("\"abc", "", Err(Truncated)),
        ("\"ab\\", "", Err(Truncated)),
        ("\"ab\\u12", "", Err(Truncated)),
        ("\"ab\\u12x4\"", "", Err(Syntax)),
        ("\"ab\\q\"", "", Err(Syntax)),
        ("\"a\nb\"", "", Err(Syntax)),
        ("{'a':1}", "/a", Err(Syntax)),
        ("{a:1}", "/a", Err(Syntax)),
        ("[01]", "/0", Err(Syntax)),
        ("[1.]", "/0", Err(Syntax)),
        ("[.5]", "/0", Err(Syntax)),
        ("[+1]", "/0", Err(Syntax)),
        ("[1e]", "/0", Err(Syntax)),
        ("[--1]", "/0", Err(Syntax)),
        ("[1x]", "/0", Err(Syntax)),
        ("[truex]", "/0", Err(Syntax)),
        ("[tru]", "/0", Err(Syntax)),
        ("[NaN]", "/0", Err(Syntax)),
        ("[12", "/0", Err(Truncated)),
        ("[1.", "/0", Err(Truncated)),
        ("[1e+", "/0", Err(Truncated)),
        ("[-", "/0", Err(Truncated)),
        ("[tr", "/0", Err(Truncated)),
        ("[true", "/0", Ok(Some((Kind::True, "true")))),
        ("[12,", "/0", Ok(Some((Kind::Number, "12")))),
        ("[", "/0", Err(Truncated)),
        ("{", "/a", Err(Truncated)),
        ("{\"a\"", "/a", Err(Truncated)),
        ("]", "", Err(Syntax)),
        ("}", "/a", Err(Syntax)),
        ("{\"a\":[}", "/b", Err(Syntax)),
        ("{\"a\":{]}", "/b", Err(Syntax)),
        ("[{\"a\":1]]", "/1", Err(Syntax)),
        ("{\"x\":{\"a\" 1}}", "/y", Err(Syntax)),
        ("{\"x\":{\"a\":1,}}", "/y", Err(Syntax)),
        ("{\"x\":[1,,2]}", "/y", Err(Syntax)),
        ("{\"x\":[\"a\" \"b\"]}", "/y", Err(Syntax)),
        ("{\"a\":tx}", "/a/b", Err(Syntax)),
        ("{\"a\":5}", "/a/b", Ok(None)),
        ("{\"a\":\"s\"}", "/a/0", Ok(None)),
        // The target is found before the damage: the rest is not examined.
        ("{\"a\":1, garbage", "/a", Ok(Some((Kind::Number, "1")))),
        ("[\"x\"]]]", "/0", Ok(Some((Kind::String, "x")))),
        (
            "{\"a\":1} trailing",
            "",
            Ok(Some((Kind::Object, "{\"a\":1}"))),
        ),
        // A non-index token on an array is known absent at once.
        ("[1, oops", "/x", Ok(None)),
    ];
    for &(doc, pointer, ref want) in cases {
        assert_eq!(&get(doc, pointer), want, "{doc:?} {pointer:?}");
    }
}

fn nested(depth: usize, open: &str, close: &str, inner: &str) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

#[test]
fn depth_limit() {
    let deep = nested(200, "[", "]", "1");
    assert_eq!(find(deep.as_bytes(), &ptr("")), Err(JsonError::TooDeep));
    assert_eq!(
        find(deep.as_bytes(), &ptr(&"/0".repeat(200))),
        Err(JsonError::TooDeep)
    );
    assert_eq!(
        find(deep.as_bytes(), &ptr(&"/0".repeat(150))),
        Err(JsonError::TooDeep)
    );
    assert_eq!(find(deep.as_bytes(), &ptr("/1")), Err(JsonError::TooDeep));

    let deep_objects = nested(200, "{\"k\":", "}", "1");
    assert_eq!(
        find(deep_objects.as_bytes(), &ptr("")),
        Err(JsonError::TooDeep)
    );
    assert_eq!(
        find(deep_objects.as_bytes(), &ptr(&"/k".repeat(200))),
        Err(JsonError::TooDeep)
    );

    // Skipped siblings count too.
    let sibling = format!("{{\"skip\":{},\"x\":1}}", nested(200, "[", "]", ""));
    assert_eq!(
        find(sibling.as_bytes(), &ptr("/x")),
        Err(JsonError::TooDeep)
    );
    let sibling_ok = format!("{{\"skip\":{},\"x\":1}}", nested(127, "[", "]", ""));
    assert_eq!(get(&sibling_ok, "/x"), Ok(Some((Kind::Number, "1"))));

    // Exactly MAX_DEPTH levels is fine; one more is not.
    let max = nested(MAX_DEPTH, "[", "]", "7");
    assert_eq!(
        get(&max, &"/0".repeat(MAX_DEPTH)),
        Ok(Some((Kind::Number, "7")))
    );
    assert_eq!(
        find(max.as_bytes(), &ptr("")).unwrap().unwrap().raw,
        max.as_bytes()
    );
    let over = nested(MAX_DEPTH + 1, "[", "]", "7");
    assert_eq!(find(over.as_bytes(), &ptr("")), Err(JsonError::TooDeep));
    let mixed = nested(MAX_DEPTH / 2, "{\"a\":[", "]}", "true");
    assert_eq!(get(&mixed, ""), Ok(Some((Kind::Object, mixed.as_str()))));
    let mixed_over = format!("[{mixed}]");
    assert_eq!(get(&mixed_over, ""), Err(JsonError::TooDeep));
    // A hostile, unterminated deep prefix is refused without recursion.
    let hostile = "[".repeat(1_000_000);
    assert_eq!(find(hostile.as_bytes(), &ptr("/x")), Ok(None));
    assert_eq!(find(hostile.as_bytes(), &ptr("")), Err(JsonError::TooDeep));
}

#[test]
fn large_strings() {
    let big = "x".repeat(1 << 20);
    let doc = format!("{{\"skip\":\"{big}\\\"{big}\",\"v\":\"{big}\"}}");
    let v = find(doc.as_bytes(), &ptr("/v")).unwrap().unwrap();
    assert_eq!(v.raw.len(), 1 << 20);
    let raw_bytes = b"{\"k\":\"\xff\xfe\x80\",\"v\":2}";
    assert_eq!(find(raw_bytes, &ptr("/v")).unwrap().unwrap().raw, b"2");
    assert_eq!(
        find(raw_bytes, &ptr("/k")).unwrap().unwrap().raw,
        b"\xff\xfe\x80"
    );
}

/// The string scan byte by byte, as before the 8-bytes-a-step one: just after an opening quote,
/// the offset of the closing quote.
fn reference_string(doc: &[u8]) -> Result<usize, JsonError> {
    let mut i = 0;
    loop {
        match doc.get(i) {
            None => return Err(JsonError::Truncated),
            Some(b'"') => return Ok(i),
            Some(b'\\') => {
                let len = match doc.get(i + 1) {
                    None => return Err(JsonError::Truncated),
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                    Some(b'u') => {
                        for j in i + 2..i + 6 {
                            match doc.get(j) {
                                None => return Err(JsonError::Truncated),
                                Some(b) if !b.is_ascii_hexdigit() => return Err(JsonError::Syntax),
                                Some(_) => {}
                            }
                        }
                        6
                    }
                    Some(_) => return Err(JsonError::Syntax),
                };
                i += len;
            }
            Some(&b) if b < 0x20 => return Err(JsonError::Syntax),
            Some(_) => i += 1,
        }
    }
}

/// The scanner's string scan on `doc` (just after an opening quote): the closing quote's offset.
fn scanned_string(doc: &[u8]) -> Result<usize, JsonError> {
    let mut s = Scanner {
        doc,
        pos: 0,
        depth: 0,
    };
    let (from, to) = s.string_body()?;
    assert_eq!((from, s.pos), (0, to + 1));
    Ok(to)
}

#[test]
fn strings_stop_at_every_offset() {
    // Each special piece at every offset modulo 8 (and across two words), in short and long
    // strings, alone or closed.
    let pieces: &[(&[u8], Result<(), JsonError>)] = &[
        (b"\\\"", Ok(())),
        (b"\\\\", Ok(())),
        (b"\\n", Ok(())),
        (b"\\u00e9", Ok(())),
        (b"\\uD83D\\ude00", Ok(())),
        (b"\\x", Err(JsonError::Syntax)),
        (b"\\u12g4", Err(JsonError::Syntax)),
        (b"\x00", Err(JsonError::Syntax)),
        (b"\n", Err(JsonError::Syntax)),
        (b"\x1f", Err(JsonError::Syntax)),
        (b"\x7f\x80\xff \x20", Ok(())),
    ];
    for before in 0..24 {
        for after in [0, 1, 7, 8, 9, 40] {
            for (piece, ok) in pieces {
                let mut doc = vec![b'a'; before];
                doc.extend_from_slice(piece);
                doc.extend(std::iter::repeat_n(b'b', after));
                let close = doc.len();
                doc.extend_from_slice(b"\", \"c\"");
                let want = ok.map(|()| close);
                assert_eq!(reference_string(&doc), want, "{before} {piece:?} {after}");
                assert_eq!(scanned_string(&doc), want, "{before} {piece:?} {after}");
                // Cut anywhere before the closing quote: truncated, unless already refused.
                for cut in 0..close {
                    let cut = &doc[..cut];
                    assert_eq!(scanned_string(cut), reference_string(cut));
                }
            }
        }
    }
    let long = [b'z'; 100_003];
    for end in [0, 1, 7, 8, 9, 4095, 100_002] {
        let mut doc = long[..end].to_vec();
        doc.push(b'"');
        assert_eq!(scanned_string(&doc), Ok(end));
        assert_eq!(scanned_string(&long[..end]), Err(JsonError::Truncated));
    }
}

#[test]
fn error_display() {
    for e in [JsonError::Syntax, JsonError::TooDeep, JsonError::Truncated] {
        assert!(!e.to_string().is_empty());
    }
}

/// JSON-escapes a member name; `slash` also escapes `/` as `\/`, `unicode` writes non-ASCII as `\u`.
fn json_escape(name: &str, slash: bool, unicode: bool) -> String {
    let mut out = String::new();
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if slash => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c if unicode && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn ws() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,2}"
}

proptest! {
    #[test]
    fn random_bytes_never_panic(doc in proptest::collection::vec(any::<u8>(), 0..200)) {
        for p in ["", "/a", "/0", "/a/0/b", "/"] {
            let _ = find(&doc, &ptr(p));
        }
    }

    #[test]
    fn jsonish_bytes_never_panic(doc in r#"[{}\[\]":,0-9a\\u.eE+\- tfrnl]{0,80}"#) {
        for p in ["", "/a", "/0", "/a/0", "/0/a", "/u"] {
            if let Ok(Some(v)) = find(doc.as_bytes(), &ptr(p)) {
                let _ = v.text();
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = Value { kind: Kind::String, raw: &raw }.text();
    }

    #[test]
    fn arbitrary_pointers_never_panic(p in "[/~01a]{0,12}") {
        if let Ok(p) = Pointer::parse(&p) {
            let _ = find(br#"{"a":[0,{"~":1,"/":2}],"0":{"1":[]}}"#, &p);
        }
    }

    #[test]
    fn finds_generated_members(
        members in proptest::collection::vec(("[a-z/~\"\\\\é😀\n]{0,6}", any::<i64>(), any::<bool>(), any::<bool>(), ws(), ws()), 1..12),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut doc = String::from("{");
        for (i, (name, value, slash, unicode, w1, w2)) in members.iter().enumerate() {
            if i > 0 {
                doc.push(',');
            }
            doc.push_str(&format!("{w1}\"{}\"{w2}:{w1}{value}{w2}", json_escape(name, *slash, *unicode)));
        }
        doc.push('}');
        let (name, ..) = &members[pick.index(members.len())];
        let first = members.iter().find(|m| &m.0 == name).unwrap().1;
        let pointer = ptr(&format!("/{}", pointer_escape(name)));
        let found = find(doc.as_bytes(), &pointer).unwrap().unwrap();
        prop_assert_eq!(found.kind, Kind::Number);
        let want = first.to_string();
        prop_assert_eq!(found.raw, want.as_bytes());
        // Absent names are reported absent after scanning the whole object.
        prop_assert_eq!(find(doc.as_bytes(), &ptr("/absent key")), Ok(None));
    }

    #[test]
    fn finds_generated_array_elements(
        values in proptest::collection::vec(any::<u32>(), 1..20),
        pick in any::<prop::sample::Index>(),
        depth in 0usize..20,
    ) {
        let list = values.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let doc = format!("{}{{\"list\": [{list}]}}{}", "[".repeat(depth), "]".repeat(depth));
        let i = pick.index(values.len());
        let pointer = ptr(&format!("{}/list/{i}", "/0".repeat(depth)));
        let found = find(doc.as_bytes(), &pointer).unwrap().unwrap();
        let want = values[i].to_string();
        prop_assert_eq!(found.raw, want.as_bytes());
        let past = ptr(&format!("{}/list/{}", "/0".repeat(depth), values.len()));
        prop_assert_eq!(find(doc.as_bytes(), &past), Ok(None));
    }

    #[test]
    fn strings_scan_like_the_reference(
        doc in proptest::collection::vec(
            prop_oneof![
                30 => Just(b'a'),
                2 => Just(b'"'),
                3 => Just(b'\\'),
                2 => Just(b'u'),
                1 => Just(b'n'),
                1 => Just(b'F'),
                1 => Just(0x1f_u8),
                1 => Just(0x20_u8),
                1 => Just(0x80_u8),
                2 => any::<u8>(),
            ],
            0..100,
        ),
    ) {
        prop_assert_eq!(scanned_string(&doc), reference_string(&doc));
    }

    #[test]
    fn prefixes_never_lie(
        members in proptest::collection::vec(("[a-c]{1,2}", any::<i32>(), "[a-z\\\\\"]{0,4}"), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut doc = String::from("{\"nest\": [");
        for (i, (name, number, text)) in members.iter().enumerate() {
            if i > 0 {
                doc.push_str(", ");
            }
            doc.push_str(&format!("{{\"{name}\": {number}, \"s\": \"{}\"}}", json_escape(text, false, false)));
        }
        doc.push_str("], \"end\": 12345}");
        let bytes = doc.as_bytes();
        let prefix = &bytes[..cut.index(bytes.len() + 1)];
        for p in ["/end", "/nest/0/a", "/nest/1/s", "/nest/2/b", "/missing", ""] {
            let full = find(bytes, &ptr(p)).unwrap();
            let partial = find(prefix, &ptr(p));
            prop_assert!(partial.is_err() || partial == Ok(full), "{:?} {} {:?} vs {:?}", String::from_utf8_lossy(prefix), p, partial, full);
            // A value taken from a prefix is the whole document's.
            let mut found = [Found::Absent];
            let _ = locate_all(prefix, &[&ptr(p)], &mut found);
            let complete = found[0].complete_in(prefix.len());
            prop_assert!(complete.is_none() || complete == full, "{:?} {} {:?}", String::from_utf8_lossy(prefix), p, complete);
            if p.is_empty() {
                prop_assert_eq!(complete, None, "nothing follows the document");
            }
        }
    }
}

/// Member names of the generated documents (and tokens of the generated pointers): escapes in
/// JSON (`"`, `\`, `/` as `\/`, non-ASCII as `\u`) and in pointers (`~0`, `~1`).
const NAMES: [&str; 7] = ["a", "b", "a/b", "m~n", "é", "", "k\"l"];

/// A random JSON document (nested objects, arrays and scalars, random whitespace) as text.
fn document() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        Just("1".to_string()),
        Just("-0.5".to_string()),
        Just("123".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("null".to_string()),
        Just("\"x\"".to_string()),
        Just(r#""a\"b\u00e9""#.to_string()),
        Just("\"\"".to_string()),
    ];
    scalar.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(
                (
                    0..NAMES.len(),
                    any::<bool>(),
                    any::<bool>(),
                    ws(),
                    inner.clone()
                ),
                0..5
            )
            .prop_map(|members| {
                let members = members
                    .into_iter()
                    .map(|(name, slash, unicode, w, value)| {
                        let name = json_escape(NAMES[name], slash, unicode);
                        format!("{w}\"{name}\"{w}:{w}{value}{w}")
                    })
                    .collect::<Vec<_>>();
                format!("{{{}}}", members.join(","))
            }),
            proptest::collection::vec((ws(), inner), 0..5).prop_map(|elements| {
                let elements = elements
                    .into_iter()
                    .map(|(w, value)| format!("{w}{value}{w}"))
                    .collect::<Vec<_>>();
                format!("[{}]", elements.join(","))
            }),
        ]
    })
}

/// A random pointer over [`NAMES`] and array indices (valid or not: `01`, `-`).
fn pointer() -> impl Strategy<Value = Pointer> {
    let token = prop_oneof![
        (0..NAMES.len()).prop_map(|i| pointer_escape(NAMES[i])),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("2".to_string()),
        Just("01".to_string()),
        Just("-".to_string()),
    ];
    proptest::collection::vec(token, 0..4)
        .prop_map(|tokens| ptr(&tokens.iter().map(|t| format!("/{t}")).collect::<String>()))
}

/// [`locate_all`] answers each pointer as [`locate`] does, and stops with the error [`locate`]
/// meets for the pointers it leaves pending.
fn locate_all_agrees(doc: &[u8], pointers: &[Pointer]) -> Result<(), TestCaseError> {
    let refs: Vec<&Pointer> = pointers.iter().collect();
    let mut out = vec![Found::Absent; refs.len()];
    let walk = locate_all(doc, &refs, &mut out);
    let text = String::from_utf8_lossy(doc);
    let mut unresolved = false;
    for (p, slot) in pointers.iter().zip(&out) {
        match (locate(doc, p), slot) {
            (Ok(Some((v, end))), Found::Value(w, e)) => {
                prop_assert!(
                    v == *w && end == *e,
                    "{text:?} {p:?}: {v:?} {end} vs {w:?} {e}"
                );
            }
            (Ok(None), Found::Absent) => {}
            (Err(err), Found::Pending(_)) => {
                unresolved = true;
                prop_assert_eq!(walk, Err(err), "{:?} {:?}", text, p);
            }
            (one, all) => prop_assert!(false, "{text:?} {p:?}: locate {one:?}, locate_all {all:?}"),
        }
    }
    if !unresolved {
        prop_assert_eq!(walk, Ok(()), "{:?}", text);
    }
    Ok(())
}

#[test]
fn locate_all_table() {
    let doc =
        br#" {"a": {"b": [10, {"c": "x"}, true], "a/b": 1, "m~n": 2, "k\"l": 3, "\u00e9\/": 4},
        "a": "second", "": {"": 5}, "s": "t", "n": null} "#;
    let pointers = [
        "",
        "/a",
        "/a/b",
        "/a/b/0",
        "/a/b/1/c",
        "/a/b/2",
        "/a/b/3",
        "/a/b/01",
        "/a/b/-",
        "/a/b/1/c/0",
        "/a/a~1b",
        "/a/m~0n",
        "/a/k\"l",
        "/a/é~1",
        "/a/b/0/x",
        "/",
        "//",
        "/s/0",
        "/n",
        "/zz",
        "/a/b",
        "/a/b/1/c",
    ];
    let pointers: Vec<Pointer> = pointers.iter().map(|p| ptr(p)).collect();
    locate_all_agrees(doc, &pointers).unwrap();
    let refs: Vec<&Pointer> = pointers.iter().collect();
    let mut out = vec![Found::Pending(7); refs.len()];
    locate_all(doc, &refs, &mut out).unwrap();
    let raw = |f: &Found<'_>| match f {
        Found::Value(v, _) => Some(std::str::from_utf8(v.raw).unwrap().to_string()),
        _ => None,
    };
    let got: Vec<_> = out.iter().map(raw).collect();
    let want = [
        Some(std::str::from_utf8(doc).unwrap().trim()),
        Some(r#"{"b": [10, {"c": "x"}, true], "a/b": 1, "m~n": 2, "k\"l": 3, "\u00e9\/": 4}"#),
        Some(r#"[10, {"c": "x"}, true]"#),
        Some("10"),
        Some("x"),
        Some("true"),
        None,
        None,
        None,
        None,
        Some("1"),
        Some("2"),
        Some("3"),
        Some("4"),
        None,
        Some(r#"{"": 5}"#),
        Some("5"),
        None,
        Some("null"),
        None,
        Some(r#"[10, {"c": "x"}, true]"#),
        Some("x"),
    ];
    let want: Vec<_> = want.iter().map(|w| w.map(str::to_string)).collect();
    assert_eq!(got, want);
    // Extra slots are left alone; no pointers, nothing read.
    let mut out = [Found::Pending(7); 3];
    locate_all(br#"{"a": 1}"#, &[&ptr("/a")], &mut out).unwrap();
    assert_eq!(out[1..], [Found::Pending(7); 2]);
    assert_eq!(locate_all(b"{", &[], &mut out[..0]), Ok(()));
    // The walk stops at the last answer: what follows is not examined.
    let mut out = [Found::Absent; 2];
    let stop = br#"{"a": 1, "b": [2], "c": oops"#;
    locate_all(stop, &[&ptr("/b/0"), &ptr("/a")], &mut out).unwrap();
    assert_eq!(
        out[0],
        Found::Value(
            Value {
                kind: Kind::Number,
                raw: b"2"
            },
            16
        )
    );
    // Once the error is met, the pointers not answered yet are pending; the others keep theirs.
    let p = [&ptr("/a"), &ptr("/c"), &ptr("/c/x"), &ptr("/b/x")];
    let mut out = [Found::Absent; 4];
    assert_eq!(locate_all(stop, &p, &mut out), Err(JsonError::Syntax));
    assert!(matches!(out[0], Found::Value(..)));
    assert!(matches!(out[1], Found::Pending(_)));
    assert!(matches!(out[2], Found::Pending(_)));
    assert_eq!(out[3], Found::Absent);
    // Too deep only where a pointer goes, or a skipped subtree is.
    let deep = nested(MAX_DEPTH + 1, "[", "]", "1");
    let mut out = [Found::Absent; 2];
    assert_eq!(
        locate_all(deep.as_bytes(), &[&ptr("/x"), &ptr("/0")], &mut out),
        Err(JsonError::TooDeep)
    );
    assert_eq!(out[0], Found::Absent);
    locate_all_agrees(deep.as_bytes(), &[ptr("/x"), ptr("/0"), ptr("/0/0/0")]).unwrap();
}

proptest! {
    #[test]
    fn locate_all_is_locate_for_each_pointer(
        doc in document(),
        pointers in proptest::collection::vec(pointer(), 1..8),
        twice in any::<prop::sample::Index>(),
        damage in proptest::option::of((any::<prop::sample::Index>(), "[{}\\[\\]\":,0a \\\\]")),
    ) {
        let mut pointers = pointers;
        // Identical pointers.
        let copy = pointers[twice.index(pointers.len())].clone();
        pointers.push(copy);
        let mut doc = doc.into_bytes();
        if let Some((at, byte)) = damage {
            let at = at.index(doc.len());
            doc[at] = byte.as_bytes()[0];
        }
        for cut in 0..=doc.len() {
            locate_all_agrees(&doc[..cut], &pointers)?;
        }
    }
}

/// Two 1 MiB documents whose target is at the very end: an array of small records (compact and
/// indented), and one long string (the shape of the e2e and benchmark bodies).
fn bench_docs() -> Vec<(&'static str, Vec<u8>)> {
    let mut records = String::from("{\"items\": [");
    let mut pretty = String::from("{\n  \"items\": [\n");
    let mut i = 0u32;
    while records.len() < (1 << 20) {
        if i > 0 {
            records.push(',');
            pretty.push_str(",\n");
        }
        records.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i} \\\"quoted\\\" name\",\"price\":{}.{:02},\"tags\":[\"a\",\"bb\"],\"active\":true,\"note\":null}}",
            i % 1000,
            i % 100
        ));
        pretty.push_str(&format!(
            "    {{\n      \"id\": {i},\n      \"name\": \"item {i} with a longer description text\",\n      \"price\": {}.{:02},\n      \"active\": false\n    }}",
            i % 1000,
            i % 100
        ));
        i += 1;
    }
    records.push_str("], \"end\": 7}");
    pretty.push_str("\n  ],\n  \"end\": 7\n}\n");
    let pad = format!(
        "{{\"order\":{{\"id\":1}},\"pad\":\"{}\",\"end\":7}}",
        "x".repeat(1 << 20)
    );
    vec![
        ("records", records.into_bytes()),
        ("indented", pretty.into_bytes()),
        ("long string", pad.into_bytes()),
    ]
}

/// Scanner throughput (no assertion on speed): `cargo test --release -p sticky-canary --lib
/// scanner_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark"]
fn scanner_throughput() {
    let p = ptr("/end");
    for (name, doc) in bench_docs() {
        assert_eq!(find(&doc, &p).unwrap().unwrap().raw, b"7");
        // The best of 40 batches of 10: the machine is shared, the best batch is the least disturbed.
        let mut best = f64::MAX;
        for _ in 0..40 {
            let start = std::time::Instant::now();
            for _ in 0..10 {
                std::hint::black_box(find(std::hint::black_box(&doc), &p).ok());
            }
            best = best.min(start.elapsed().as_secs_f64() / 10.0);
        }
        let mbps = doc.len() as f64 / best / 1e6;
        eprintln!("{name:12} {:7} bytes: {mbps:8.0} MB/s", doc.len());
    }
}

/// k walks of [`locate`] against one of [`locate_all`] for 4 pointers near the end of a 64 KiB
/// document (no assertion on speed): `cargo test --release -p sticky-canary --lib
/// one_walk_for_all_pointers -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark"]
fn one_walk_for_all_pointers() {
    let mut doc = String::from("{\"items\": [");
    let mut i = 0u32;
    while doc.len() < 64 * 1024 - 100 {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i}\",\"price\":{}.{:02},\"active\":true}}",
            i % 1000,
            i % 100
        ));
        i += 1;
    }
    doc.push_str(r#"], "order": {"tax": "1.99", "total": 12.5}, "status": "ok", "end": 7}"#);
    let doc = doc.into_bytes();
    let pointers = [
        ptr("/order/tax"),
        ptr("/order/total"),
        ptr("/status"),
        ptr("/end"),
    ];
    let refs: Vec<&Pointer> = pointers.iter().collect();
    locate_all_agrees(&doc, &pointers).unwrap();
    let best = |f: &mut dyn FnMut()| {
        let mut best = f64::MAX;
        for _ in 0..40 {
            let start = std::time::Instant::now();
            for _ in 0..20 {
                f();
            }
            best = best.min(start.elapsed().as_secs_f64() / 20.0);
        }
        best * 1e6
    };
    for k in 1..=pointers.len() {
        let single = best(&mut || {
            for p in &pointers[..k] {
                std::hint::black_box(locate(std::hint::black_box(&doc), p).ok());
            }
        });
        let mut out = [Found::Absent; 4];
        let multi = best(&mut || {
            let _ = std::hint::black_box(locate_all(
                std::hint::black_box(&doc),
                &refs[..k],
                &mut out[..k],
            ));
        });
        eprintln!(
            "{} bytes, {k} pointers: {single:7.1} µs in {k} walks, {multi:7.1} µs in one",
            doc.len()
        );
    }
}
