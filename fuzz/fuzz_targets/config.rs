//! `Plan::from_json` and `Plan::from_json_with_env` on arbitrary documents.
//!
//! Input: the configuration document, optionally followed by a NUL byte and the value the
//! environment returns for any variable (`override.tokens_env`). A NUL cannot occur in a valid
//! JSON text, so the split never hides a valid document.
//!
//! Checks: never panics; a refusal has a reason and a non-empty field path, and an unknown member
//! is named by that path; every accepted plan is consistent (1..=16 versions with unique names,
//! `cumulative` non-decreasing with steps equal to the weights and last == total_weight in
//! 1..=u32::MAX, default and pin versions in range, sources non-empty, header names lowercase,
//! business rules bounded and uniquely named); `summary()` does not panic and names the service;
//! `pick` maps every position below the total to a version of weight > 0 whose cumulative range
//! contains it; `bucket` stays in range. The environment never changes whether a document is
//! accepted nor the error, and an environment that has nothing gives exactly `from_json`'s result.
//! Tokens read from the environment are never echoed into the summary or warnings.
//! serde_json (the reader before the crate's own `de`) is the model of `config::parse`: the same
//! documents are accepted, into the same raw configuration; the deliberate differences are a
//! struct written as an array of its fields and a unit variant written as `{"Name": null}`, which
//! serde_json took and `parse` refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sticky_canary::config::{parse, ConfigError, RawConfig, MAX_VERSIONS};
use sticky_canary::plan::{Plan, Source};

fn check(plan: &Plan) {
    let n = plan.versions.len();
    assert!((1..=MAX_VERSIONS).contains(&n), "{n} versions");
    assert_eq!(plan.cumulative.len(), n);
    let mut sum = 0u64;
    for (i, v) in plan.versions.iter().enumerate() {
        sum += u64::from(v.weight);
        assert_eq!(plan.cumulative[i], sum, "cumulative[{i}]");
        assert!(
            !plan.versions[..i].iter().any(|w| w.name == v.name),
            "duplicate {}",
            v.name
        );
        assert!(!v.name.is_empty());
    }
    assert!(plan.cumulative.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(plan.cumulative.last().copied(), Some(plan.total_weight));
    assert!(plan.total_weight > 0 && plan.total_weight <= u64::from(u32::MAX));
    assert!(plan.default_version < n);
    assert!(!plan.sources.is_empty());
    for s in &plan.sources {
        match s {
            Source::Cookie(name) => assert!(!name.is_empty()),
            Source::Header(name) => {
                assert!(!name.is_empty());
                assert_eq!(*name, name.to_ascii_lowercase());
            }
        }
    }
    if let Some(a) = &plan.assign {
        assert!(
            plan.sources.contains(&Source::Cookie(a.name.clone())),
            "assign cookie not a source"
        );
    }
    for h in [&plan.route_header, &plan.response_header]
        .into_iter()
        .chain(plan.reason_header.as_ref())
    {
        assert!(!h.is_empty() && *h == h.to_ascii_lowercase(), "{h:?}");
    }
    if let Some(o) = &plan.override_ {
        assert_ne!(o.header, o.token_header);
        assert_eq!(o.header, o.header.to_ascii_lowercase());
        assert_eq!(o.token_header, o.token_header.to_ascii_lowercase());
    }
    for p in &plan.pins {
        assert!(p.version < n, "pin version {} of {n}", p.version);
        assert!(!p.values.is_empty() && p.values.iter().all(|v| !v.is_empty()));
        assert_eq!(p.header, p.header.to_ascii_lowercase());
    }
    let b = &plan.business;
    assert!(b.rules.len() <= 64);
    assert!(b.max_body_bytes >= 1 && b.max_body_bytes <= 16 * 1024 * 1024);
    for (i, r) in b.rules.iter().enumerate() {
        assert!(
            !b.rules[..i].iter().any(|s| s.name == r.name),
            "duplicate rule {}",
            r.name
        );
        assert!(r.scale <= sticky_canary::formats::decimal::MAX_SCALE);
    }

    let summary = plan.summary();
    assert!(
        summary.contains(&format!("service={}", plan.service)),
        "{summary}"
    );
    for v in &plan.versions {
        assert!(summary.contains(&v.name));
    }

    // Every version boundary, and the positions around them.
    for (i, &c) in plan.cumulative.iter().enumerate() {
        for pos in [
            c.wrapping_sub(1),
            c,
            c.saturating_add(1),
            0,
            plan.total_weight - 1,
        ] {
            if pos >= plan.total_weight {
                continue;
            }
            let k = plan.pick(pos);
            assert!(k < n);
            assert!(
                plan.versions[k].weight > 0,
                "pick({pos}) chose weight-0 version {k}"
            );
            let low = if k == 0 { 0 } else { plan.cumulative[k - 1] };
            assert!(
                low <= pos && pos < plan.cumulative[k],
                "pick({pos}) = {k} (via {i})"
            );
        }
    }
    for key in [&b""[..], b"a", b"session-1", plan.salt.as_slice()] {
        assert!(plan.bucket(key) < n);
    }
}

/// Maps each ASCII letter or digit to a different one of the same class; other chars unchanged.
fn disguise(c: char) -> char {
    match c {
        'a'..='y' | 'A'..='Y' | '0'..='8' => char::from(c as u8 + 1),
        'z' => 'a',
        'Z' => 'A',
        '9' => '0',
        _ => c,
    }
}

/// What two compilations of the same document must agree on.
fn outcome(r: &Result<Plan, ConfigError>) -> Result<(String, Vec<String>), ConfigError> {
    r.as_ref()
        .map(|p| (p.summary(), p.warnings.clone()))
        .map_err(Clone::clone)
}

fuzz_target!(|data: &[u8]| {
    let (doc, env_value) = match data.iter().position(|&b| b == 0) {
        Some(i) => (
            &data[..i],
            Some(String::from_utf8_lossy(&data[i + 1..]).into_owned()),
        ),
        None => (data, None),
    };

    let raw = parse(doc);
    let model = if doc.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{') {
        serde_json::from_slice::<RawConfig>(doc).ok()
    } else {
        None
    };
    match (&raw, &model) {
        (Ok(got), Some(want)) => assert_eq!(format!("{got:?}"), format!("{want:?}")),
        (Ok(_), None) => panic!("accepted a document serde_json refuses"),
        (Err(e), Some(_)) => assert!(
            e.reason
                .starts_with("invalid type: sequence, expected struct")
                || e.reason.starts_with("invalid type: map, expected enum"),
            "refused a document serde_json accepts: {e:?}"
        ),
        (Err(_), None) => {}
    }

    let plain = Plan::from_json(doc);
    if let Ok(plan) = &plain {
        check(plan);
    }
    if let Err(e) = &plain {
        // A refusal names a field path (or `(root)`) and a reason.
        assert!(!e.reason.is_empty(), "{e:?}");
        assert!(!e.path.is_empty(), "refusal names no field: {e:?}");
        // An unknown member is named by the path's last segment.
        // (`unknown field `NAME`, expected …`; NAME may itself contain backticks.)
        if let Some(name) = e
            .reason
            .strip_prefix("unknown field `")
            .and_then(|r| r.rfind("`, expected").map(|end| &r[..end]))
        {
            // A member named "" must still be visible, e.g. as `""` or `session.""`.
            let shown = if name.is_empty() { "\"\"" } else { name };
            assert!(
                e.path == shown || e.path.ends_with(&format!(".{shown}")),
                "refusal names no field: {e:?}"
            );
        }
        let _ = e.to_string();
    }

    // An environment with nothing in it: exactly the plain compilation.
    let unset = Plan::from_json_with_env(doc, &|_| None);
    assert_eq!(
        outcome(&unset),
        outcome(&plain),
        "env → None differs from from_json"
    );

    // An environment returning the fuzzer's string for any variable.
    if let Some(value) = env_value {
        let with = Plan::from_json_with_env(doc, &|_| Some(value.clone()));
        match (&with, &plain) {
            (Ok(plan), Ok(_)) => {
                check(plan);
                // Tokens are never echoed: the same environment with every letter and digit
                // changed (same lengths, same separators, so the same entries are usable) gives
                // the same summary and the same warnings.
                let disguised: String = value.chars().map(disguise).collect();
                let other = Plan::from_json_with_env(doc, &|_| Some(disguised.clone()));
                assert_eq!(
                    outcome(&other),
                    outcome(&with),
                    "env content leaks into the plan's log lines"
                );
                if plan.override_.is_none() {
                    assert_eq!(
                        plan.warnings,
                        plain
                            .as_ref()
                            .map(|p| p.warnings.clone())
                            .unwrap_or_default()
                    );
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "the environment changed the error"),
            _ => panic!(
                "the environment changed acceptance: with env {:?}, without {:?}",
                with.as_ref().err(),
                plain.as_ref().err()
            ),
        }
    }
});
