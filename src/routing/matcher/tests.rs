use super::*;
use proptest::prelude::*;

fn compile(hosts: &[&str], prefixes: Option<&[&str]>) -> Result<Match, ConfigError> {
    Match::compile(RawMatch {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        path_prefixes: prefixes.map(|p| p.iter().map(|s| s.to_string()).collect()),
    })
}

fn services_path(i: usize) -> String {
    format!("services[{i}].")
}

/// (service name, hosts, path prefixes).
type Written<'a> = (&'a str, &'a [&'a str], Option<&'a [&'a str]>);

fn matcher(services: &[Written<'_>]) -> Result<Matcher, ConfigError> {
    let compiled: Vec<(String, Match)> = services
        .iter()
        .map(|(n, h, p)| (n.to_string(), compile(h, *p).unwrap()))
        .collect();
    let refs: Vec<(&str, &Match)> = compiled.iter().map(|(n, m)| (n.as_str(), m)).collect();
    Matcher::build(&refs, &services_path)
}

fn find(m: &Matcher, authority: &str, path: &str) -> Option<usize> {
    let mut a = authority.as_bytes().to_vec();
    m.find(&mut a, Some(path.as_bytes()))
}

#[test]
fn host_and_prefix_precedence() {
    let m = matcher(&[
        ("exact", &["shop.example.com"], None),
        ("wild", &["*.example.com"], None),
        ("deeper", &["*.eu.example.com"], None),
        ("api", &["shop.example.com"], Some(&["/api/", "/api/v2/"])),
        ("v2", &["api.example.org"], Some(&["/v2"])),
        ("ipv6", &["[::1]"], None),
    ])
    .unwrap();
    assert!(m.reads_path());
    for (authority, path, want) in [
        ("shop.example.com", "/", Some(0)),
        ("SHOP.Example.COM:8443", "/cart", Some(0)),
        ("shop.example.com", "/api/orders", Some(3)),
        ("shop.example.com", "/api/v2/x", Some(3)),
        ("shop.example.com", "/api?x=1", Some(0)),
        ("shop.example.com", "/api/?x=1", Some(3)),
        ("a.example.com", "/", Some(1)),
        ("a.b.example.com", "/", Some(1)),
        ("example.com", "/", None),
        ("x.eu.example.com", "/", Some(2)),
        ("eu.example.com", "/", Some(1)),
        ("api.example.org", "/v2/items", Some(4)),
        ("api.example.org", "/v2", Some(4)),
        ("api.example.org", "/v20", Some(4)),
        ("api.example.org", "/V2", None),
        ("api.example.org", "/v1", None),
        ("[::1]:8080", "/", Some(5)),
        ("[::1]", "/", Some(5)),
        ("other.org", "/", None),
        ("", "/", None),
        (".example.com", "/", None),
    ] {
        assert_eq!(find(&m, authority, path), want, "{authority} {path}");
    }
}

#[test]
fn no_fallback_to_a_less_specific_host() {
    let m = matcher(&[
        ("wild", &["*.example.com"], None),
        ("api", &["api.example.com"], Some(&["/api/"])),
        ("deep", &["*.eu.example.com"], Some(&["/x/"])),
    ])
    .unwrap();
    assert_eq!(find(&m, "api.example.com", "/api/a"), Some(1));
    assert_eq!(find(&m, "api.example.com", "/other"), None);
    assert_eq!(find(&m, "a.eu.example.com", "/other"), None);
    assert_eq!(find(&m, "a.eu.example.com", "/x/1"), Some(2));
}

#[test]
fn a_single_service_without_match_takes_everything() {
    let m = Matcher::everything();
    assert_eq!(m.matches_everything(), Some(0));
    assert!(!m.reads_path());
    assert_eq!(find(&m, "anything", "/"), Some(0));
}

#[test]
fn hosts_are_lowercase_without_port() {
    let m = compile(&["Shop.Example.COM:443", "*.Example.org", "[::1]:80"], None).unwrap();
    assert_eq!(
        m.hosts,
        [
            HostPattern::Exact("shop.example.com".into()),
            HostPattern::Wildcard("example.org".into()),
            HostPattern::Exact("[::1]".into()),
        ]
    );
    assert_eq!(m.path_prefixes, ["/"]);
    assert!(!m.reads_path);
}

#[test]
fn refusals_name_the_field() {
    for (hosts, prefixes, path, says) in [
        (&[][..], None, "match.hosts", "at least one host"),
        (&["*"][..], None, "match.hosts[0]", "leading \"*.\" only"),
        (&["a.*.b"][..], None, "match.hosts[0]", "not a host"),
        (&["*foo.com"][..], None, "match.hosts[0]", "not a host"),
        (&["foo.*"][..], None, "match.hosts[0]", "not a host"),
        (
            &["ok.com", "*.*.com"][..],
            None,
            "match.hosts[1]",
            "not a host",
        ),
        (&["a..b"][..], None, "match.hosts[0]", "not a host"),
        (&["a b"][..], None, "match.hosts[0]", "not a host"),
        (
            &["a.com", "A.com:80"][..],
            None,
            "match.hosts[1]",
            "listed twice",
        ),
        (
            &["a.com"][..],
            Some(&[][..]),
            "match.path_prefixes",
            "1 to 256",
        ),
        (
            &["a.com"][..],
            Some(&["api"][..]),
            "match.path_prefixes[0]",
            "starts with '/'",
        ),
        (
            &["a.com"][..],
            Some(&["/a?b"][..]),
            "match.path_prefixes[0]",
            "query",
        ),
        (
            &["a.com"][..],
            Some(&["/a", "/a"][..]),
            "match.path_prefixes[1]",
            "listed twice",
        ),
    ] {
        let e = compile(hosts, prefixes).unwrap_err();
        assert_eq!(e.path, path, "{hosts:?}: {e}");
        assert!(e.reason.contains(says), "{hosts:?}: {e}");
    }
}

#[test]
fn two_services_cannot_claim_the_same_host_and_prefix() {
    let e = matcher(&[
        ("shop", &["shop.example.com"], None),
        ("search", &["search.example.com", "SHOP.example.com"], None),
    ])
    .unwrap_err();
    assert_eq!(e.path, "services[1].match.hosts[1]");
    assert!(e.reason.contains("services[0] (shop)"), "{e}");
    // The explicit "/" is the implicit one.
    let e = matcher(&[
        ("shop", &["*.example.com"], None),
        ("api", &["*.example.com"], Some(&["/api", "/"])),
    ])
    .unwrap_err();
    assert_eq!(e.path, "services[1].match.hosts[0]");
    assert!(
        e.reason.contains("*.example.com with path prefix / is"),
        "{e}"
    );
    // The same host with other prefixes, and an exact host under a wildcard, are fine.
    matcher(&[
        ("shop", &["shop.example.com"], None),
        ("api", &["shop.example.com"], Some(&["/api"])),
        ("wild", &["*.shop.example.com", "*.example.com"], None),
    ])
    .unwrap();
}

/// The reference: a scan over every (service, host, prefix), applying the precedence rules.
fn naive(services: &[Match], authority: &str, path: &str) -> Option<usize> {
    let authority = authority.to_ascii_lowercase();
    let host = std::str::from_utf8(strip_port(authority.as_bytes())).unwrap();
    let path = path.split(['?', '#']).next().unwrap();
    // (host rank, prefix length) of the best match; host rank: exact = MAX, wildcard = suffix len.
    let rank = |p: &HostPattern| match p {
        HostPattern::Exact(h) if h == host => Some(usize::MAX),
        HostPattern::Wildcard(s)
            if host.len() > s.len() + 1
                && host.ends_with(s.as_str())
                && host.as_bytes()[host.len() - s.len() - 1] == b'.' =>
        {
            Some(s.len())
        }
        _ => None,
    };
    let best_host = services
        .iter()
        .flat_map(|m| m.hosts.iter().filter_map(rank))
        .max()?;
    services
        .iter()
        .enumerate()
        .filter(|(_, m)| m.hosts.iter().any(|h| rank(h) == Some(best_host)))
        .flat_map(|(i, m)| {
            m.path_prefixes
                .iter()
                .filter(|p| path.starts_with(p.as_str()))
                .map(move |p| (p.len(), i))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, i)| i)
}

fn label() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "shop", "eu", "x-1"]).prop_map(str::to_string)
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
}

fn pattern() -> impl Strategy<Value = String> {
    (any::<bool>(), name()).prop_map(|(w, n)| if w { format!("*.{n}") } else { n })
}

fn prefix() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["/", "/a", "/a/", "/ab", "/a/b", "/b"]).prop_map(str::to_string)
}

proptest! {
    #[test]
    fn lookup_equals_a_naive_scan(
        written in prop::collection::vec(
            (prop::collection::btree_set(pattern(), 1..4),
             prop::option::of(prop::collection::btree_set(prefix(), 1..3))),
            1..8),
        requests in prop::collection::vec((name(), prefix(), "[?x]{0,2}", any::<bool>()), 1..20),
    ) {
        let compiled: Vec<Match> = written
            .iter()
            .map(|(h, p)| Match::compile(RawMatch {
                hosts: h.iter().cloned().collect(),
                path_prefixes: p.as_ref().map(|p| p.iter().cloned().collect()),
            }).unwrap())
            .collect();
        let refs: Vec<(&str, &Match)> = compiled.iter().map(|m| ("s", m)).collect();
        let Ok(m) = Matcher::build(&refs, &services_path) else {
            // A conflict: a (host, prefix) claimed twice; the scan has no answer to compare.
            return Ok(());
        };
        for (host, path, query, upper) in &requests {
            let authority = if *upper { host.to_ascii_uppercase() + ":80" } else { host.clone() };
            let path = format!("{path}{query}");
            prop_assert_eq!(find(&m, &authority, &path), naive(&compiled, &authority, &path),
                "{} {}", authority, path);
        }
    }
}

/// The lookup's own cost at 1 to 1 000 services (ns per `find`, requests spread over every
/// host): `cargo test --release -p sticky-canary --lib lookup_cost -- --ignored --nocapture`.
/// Prints, asserts nothing about speed.
#[test]
#[ignore]
fn lookup_cost_per_size() {
    for n in [1usize, 10, 100, 1000] {
        let compiled: Vec<(String, Match)> = (0..n)
            .map(|i| {
                let hosts = vec![format!("s{i}.bench.example"), format!("*.s{i}.example.org")];
                (
                    format!("s{i}"),
                    Match::compile(RawMatch {
                        hosts,
                        path_prefixes: None,
                    })
                    .unwrap(),
                )
            })
            .collect();
        let refs: Vec<(&str, &Match)> = compiled.iter().map(|(s, m)| (s.as_str(), m)).collect();
        let m = Matcher::build(&refs, &services_path).unwrap();
        let authorities: Vec<Vec<u8>> = (0..1000)
            .map(|j| {
                if j % 2 == 0 {
                    format!("S{}.bench.example:443", j % n).into_bytes()
                } else {
                    format!("www.eu.s{}.example.org", j % n).into_bytes()
                }
            })
            .collect();
        let rounds = 2000;
        let mut buf = authorities.clone();
        let start = std::time::Instant::now();
        let mut found = 0usize;
        for _ in 0..rounds {
            for (a, b) in authorities.iter().zip(buf.iter_mut()) {
                b.copy_from_slice(a);
                found += usize::from(m.find(b, None).is_some());
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (rounds * authorities.len()) as f64;
        assert_eq!(found, rounds * authorities.len());
        println!(
            "LOOKUP {n:>5} services: {ns:.1} ns per lookup (exact and wildcard hosts, half each)"
        );
    }
}
