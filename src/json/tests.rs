use super::*;
use proptest::prelude::*;
use std::borrow::Cow;

fn ptr(text: &str) -> Pointer {
    Pointer::parse(text).unwrap()
}

/// What [`get`] reports: the kind and raw text of the value found.
type Found<'a> = Result<Option<(Kind, &'a str)>, JsonError>;

fn get<'a>(doc: &'a str, pointer: &str) -> Found<'a> {
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
    let cases: &[(&str, &str, Found)] = &[
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
        }
    }
}
