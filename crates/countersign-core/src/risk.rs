//! Risk scoring of tool calls behind one interface. The built-in assessor is deliberately
//! plain and says exactly what it looks at:
//! - the tool name: destructive, financial, outward-communication and privilege verbs;
//! - the arguments' text: SQL and shell injection fragments, prompt-injection phrases, and
//!   strings shaped like credentials.
//!
//! The score starts at 0.1 and each finding adds its weight, capped at 1.0.
use serde_json::Value;

use crate::toolcall::ToolCall;

#[derive(Debug, Clone, PartialEq)]
pub struct RiskAssessment {
    /// 0.0 (harmless) to 1.0.
    pub score: f64,
    /// Stable names of what was found, e.g. `destructive_operation`.
    pub threats: Vec<String>,
}

/// Anything that can score a tool call.
pub trait RiskAssessor: Send + Sync + std::fmt::Debug {
    fn assess(&self, call: &ToolCall) -> RiskAssessment;
}

const NAME_RULES: &[(&str, f64, &[&str])] = &[
    (
        "destructive_operation",
        0.5,
        &[
            "delete", "drop", "destroy", "remove", "truncate", "wipe", "purge", "erase",
        ],
    ),
    (
        "financial_operation",
        0.4,
        &[
            "pay", "refund", "transfer", "charge", "invoice", "wire", "withdraw",
        ],
    ),
    (
        "external_communication",
        0.25,
        &[
            "send", "email", "post", "publish", "tweet", "message", "notify",
        ],
    ),
    (
        "privilege_change",
        0.4,
        &[
            "grant",
            "permission",
            "role",
            "admin",
            "password",
            "credential",
            "secret",
        ],
    ),
];

const TEXT_RULES: &[(&str, f64, &[&str])] = &[
    (
        "sql_injection_pattern",
        0.4,
        &[
            "drop table",
            "; --",
            "' or '1'='1",
            "union select",
            "delete from",
        ],
    ),
    (
        "shell_injection_pattern",
        0.4,
        &[
            "rm -rf",
            "| sh",
            "|sh",
            "$(",
            "`",
            "; curl",
            "&& curl",
            "mkfs",
            "chmod 777",
        ],
    ),
    (
        "prompt_injection_phrase",
        0.3,
        &[
            "ignore previous instructions",
            "ignore all previous",
            "disregard your",
            "system prompt",
        ],
    ),
    (
        "credential_in_arguments",
        0.3,
        &["-----begin", "akia", "sk-", "password=", "api_key="],
    ),
];

/// The built-in keyword assessor.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeywordRisk;

fn collect_text(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            out.push_str(&s.to_lowercase());
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|v| collect_text(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push_str(&k.to_lowercase());
            out.push('\n');
            collect_text(v, out);
        }),
        _ => {}
    }
}

impl RiskAssessor for KeywordRisk {
    fn assess(&self, call: &ToolCall) -> RiskAssessment {
        let name = call.name.to_lowercase();
        let mut text = String::new();
        collect_text(&call.arguments, &mut text);
        let mut score: f64 = 0.1;
        let mut threats = Vec::new();
        for (threat, weight, words) in NAME_RULES {
            if words.iter().any(|w| name.contains(w)) {
                score += weight;
                threats.push(threat.to_string());
            }
        }
        for (threat, weight, fragments) in TEXT_RULES {
            if fragments.iter().any(|f| text.contains(f)) {
                score += weight;
                threats.push(threat.to_string());
            }
        }
        RiskAssessment {
            score: (score.min(1.0) * 100.0).round() / 100.0,
            threats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolcall::normalize;
    use serde_json::json;

    #[test]
    fn names_and_arguments_raise_the_score() {
        let search = KeywordRisk.assess(
            &normalize(&json!({"name": "search_docs", "arguments": {"q": "hello"}})).unwrap(),
        );
        assert_eq!(search.score, 0.1);
        assert!(search.threats.is_empty());
        let refund = KeywordRisk.assess(
            &normalize(&json!({"name": "payment_refund", "arguments": {"amount": 5}})).unwrap(),
        );
        assert_eq!(refund.threats, vec!["financial_operation"]);
        assert_eq!(refund.score, 0.5);
        let nasty = KeywordRisk.assess(
            &normalize(&json!({"name": "db_delete", "arguments": {"sql": "DROP TABLE users; --", "note": "ignore previous instructions"}}))
                .unwrap(),
        );
        assert!(nasty.threats.contains(&"destructive_operation".to_string()));
        assert!(nasty.threats.contains(&"sql_injection_pattern".to_string()));
        assert!(
            nasty
                .threats
                .contains(&"prompt_injection_phrase".to_string())
        );
        assert_eq!(nasty.score, 1.0);
    }
}
