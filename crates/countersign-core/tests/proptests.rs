//! Property tests of the parsers that take untrusted input: tool-call shapes, canonical JSON and
//! its number rule, agent text, and policy conditions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use countersign_core::{canonical, display, payload, policy, toolcall, validate};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,8}",
        any::<String>(),
        "[a-z \u{202A}-\u{202E}\u{2066}-\u{2069}\u{200B}\u{05D0}-\u{05EA}]{0,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Two numbers with the same mathematical value, however they are held.
fn same_number(a: &Number, b: &Number) -> bool {
    let exact = |n: &Number| -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                    .map(|f| f as i128)
            })
    };
    match (exact(a), exact(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.as_f64() == b.as_f64(),
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_json_is_a_fixed_point(v in json_value()) {
        let once = canonical::canonical_json(&v).unwrap();
        let reparsed: Value = serde_json::from_str(&once).unwrap();
        prop_assert_eq!(canonical::canonical_json(&reparsed).unwrap(), once);
    }

    #[test]
    fn digests_are_equal_exactly_when_canonical_forms_are(a in json_value(), b in json_value()) {
        let (ca, cb) = (canonical::canonical_json(&a).unwrap(), canonical::canonical_json(&b).unwrap());
        let (da, db) = (canonical::canonical_sha256(&a).unwrap(), canonical::canonical_sha256(&b).unwrap());
        prop_assert_eq!(ca == cb, da == db);
        // Key order and whitespace never matter.
        let pretty: Value = serde_json::from_str(&serde_json::to_string_pretty(&a).unwrap()).unwrap();
        prop_assert_eq!(canonical::canonical_sha256(&pretty).unwrap(), da);
    }

    #[test]
    fn the_number_rule_never_accepts_a_value_canonical_json_changes(v in json_value()) {
        if payload::check("v", &v).is_ok() {
            let reparsed: Value = serde_json::from_str(&canonical::canonical_json(&v).unwrap()).unwrap();
            prop_assert!(same_value(&v, &reparsed), "{v} became {reparsed}");
        }
    }

    #[test]
    fn integers_are_accepted_exactly_within_the_safe_range(n in any::<i64>()) {
        let accepted = payload::check("v", &json!({"n": n})).is_ok();
        prop_assert_eq!(accepted, n.unsigned_abs() <= payload::MAX_SAFE_INTEGER);
        if accepted && n < (1i64 << 53) - 1 {
            prop_assert_ne!(
                canonical::canonical_sha256(&json!({"n": n})).unwrap(),
                canonical::canonical_sha256(&json!({"n": n + 1})).unwrap()
            );
        }
    }

    #[test]
    fn tool_calls_in_any_shape_normalise_or_are_refused_without_panicking(v in json_value()) {
        let _ = toolcall::normalize(&v);
        let _ = toolcall::normalize(&json!({"name": v.clone(), "arguments": v.clone()}));
        let _ = toolcall::normalize(&json!({"type": "function", "function": {"name": "x", "arguments": v.to_string()}}));
    }

    #[test]
    fn the_three_shapes_agree(name in text(), args in prop::collection::btree_map(text(), json_value(), 0..5)) {
        let args = Value::Object(args.into_iter().collect());
        let plain = toolcall::normalize(&json!({"name": name, "arguments": args}));
        let openai = toolcall::normalize(&json!({"type": "function", "function": {"name": name, "arguments": args.to_string()}}));
        let anthropic = toolcall::normalize(&json!({"type": "tool_use", "name": name, "input": args}));
        match (&plain, &openai, &anthropic) {
            (Ok(a), Ok(b), Ok(c)) => {
                prop_assert_eq!(a, b);
                prop_assert_eq!(a, c);
                // What was accepted is what the digest covers, and its keys are honest text.
                prop_assert_eq!(&a.arguments_sha256, &canonical::canonical_sha256(&a.arguments).unwrap());
                prop_assert!(!a.name.chars().any(validate::is_hidden));
            }
            (Err(a), Err(b), Err(c)) => {
                prop_assert_eq!(a.code(), b.code());
                prop_assert_eq!(a.code(), c.code());
            }
            other => prop_assert!(false, "the shapes disagree: {other:?}"),
        }
    }

    #[test]
    fn shown_text_holds_no_hidden_characters(s in any::<String>(), v in json_value()) {
        let shown = display::visible(&s);
        prop_assert!(!shown.chars().any(|c| validate::is_hidden(c) && c != '\n' && c != '\t'));
        let text = display::json_text(&v, 10_000);
        prop_assert!(!text.chars().any(|c| validate::is_hidden(c) && !matches!(c, '\n' | '\t' | display::FSI | display::PDI)));
    }

    #[test]
    fn conditions_compile_or_are_refused_without_panicking(
        source in prop_oneof![
            any::<String>(),
            "[a-z_. ()\\[\\]{}<>=!&|+*/%?:,'\"0-9-]{0,80}",
            "(args|tool|risk|agent|scope|size|has|exists|all|map|filter)[a-z_. ()\\[\\]<>=!&|+0-9,'\"-]{0,60}",
        ]
    ) {
        let _ = policy::compile_condition(&source);
    }
}
