//! Tool calls as agents send them, in any of the common shapes, reduced to one form: a name and
//! a JSON object of arguments whose RFC 8785 digest identifies exactly what would run.
use serde_json::{Map, Value};

use crate::{Error, Result, canonical, payload, validate};

pub const MAX_TOOL_NAME_CHARS: usize = 200;

/// A tool call in its one canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
    /// Hex SHA-256 of the canonical JSON of `arguments`.
    pub arguments_sha256: String,
}

fn field<'a>(call: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    call.get(name).filter(|v| !v.is_null())
}

fn arguments_object(value: Option<&Value>, what: &str) -> Result<Value> {
    match value {
        None => Ok(Value::Object(Map::new())),
        Some(Value::Object(map)) => Ok(Value::Object(map.clone())),
        // OpenAI sends arguments as a JSON string.
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Value::Object(map)),
            Ok(_) => Err(Error::invalid(format!(
                "`{what}` must encode a JSON object"
            ))),
            Err(e) => Err(Error::invalid(format!("`{what}` is not valid JSON: {e}"))),
        },
        Some(_) => Err(Error::invalid(format!("`{what}` must be a JSON object"))),
    }
}

fn name_of(value: Option<&Value>, what: &str) -> Result<String> {
    match value {
        Some(Value::String(name)) => {
            validate::text(what, name, MAX_TOOL_NAME_CHARS)?;
            Ok(name.trim().to_string())
        }
        Some(_) => Err(Error::invalid(format!("`{what}` must be a string"))),
        None => Err(Error::invalid(format!("`{what}` is required"))),
    }
}

/// Accepts `{name, arguments}`, OpenAI's `{type:"function", function:{name, arguments:"<json>"}}`
/// and Anthropic's `{type:"tool_use", name, input}`.
pub fn normalize(raw: &Value) -> Result<ToolCall> {
    let Value::Object(call) = raw else {
        return Err(Error::invalid("`tool_call` must be a JSON object"));
    };
    let kind = match field(call, "type") {
        None => None,
        Some(Value::String(kind)) => Some(kind.as_str()),
        Some(_) => return Err(Error::invalid("`tool_call.type` must be a string")),
    };
    let (name, arguments) = match kind {
        Some("function") => {
            let Some(Value::Object(function)) = field(call, "function") else {
                return Err(Error::invalid(
                    "`tool_call.function` must be an object with `name` and `arguments`",
                ));
            };
            (
                name_of(field(function, "name"), "tool_call.function.name")?,
                arguments_object(field(function, "arguments"), "tool_call.function.arguments")?,
            )
        }
        Some("tool_use") => (
            name_of(field(call, "name"), "tool_call.name")?,
            arguments_object(field(call, "input"), "tool_call.input")?,
        ),
        None => (
            name_of(field(call, "name"), "tool_call.name")?,
            arguments_object(field(call, "arguments"), "tool_call.arguments")?,
        ),
        Some(other) => {
            return Err(Error::invalid(format!(
                "`tool_call.type` {other:?} is not supported: use \"function\", \"tool_use\" or no type"
            )));
        }
    };
    payload::check("arguments", &arguments)?;
    let arguments_sha256 = canonical::canonical_sha256(&arguments)?;
    Ok(ToolCall {
        name,
        arguments,
        arguments_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_shapes_reduce_to_the_same_call() {
        let plain = normalize(
            &json!({"name": "payment_refund", "arguments": {"amount": 500, "customer_id": "c1"}}),
        )
        .unwrap();
        let openai = normalize(&json!({"id": "call_1", "type": "function", "function": {"name": "payment_refund", "arguments": "{\"customer_id\":\"c1\",\"amount\":500}"}})).unwrap();
        let anthropic = normalize(&json!({"type": "tool_use", "id": "toolu_1", "name": "payment_refund", "input": {"customer_id": "c1", "amount": 500}})).unwrap();
        assert_eq!(plain, openai);
        assert_eq!(plain, anthropic);
        assert_eq!(plain.name, "payment_refund");
    }

    #[test]
    fn bad_shapes_are_explained() {
        assert!(normalize(&json!([1])).is_err());
        assert!(
            normalize(&json!({"arguments": {}}))
                .unwrap_err()
                .to_string()
                .contains("name")
        );
        assert!(
            normalize(&json!({"type": "function", "function": {"name": "x", "arguments": "{"}}))
                .is_err()
        );
        assert!(
            normalize(&json!({"type": "function", "function": {"name": "x", "arguments": "[1]"}}))
                .is_err()
        );
        assert!(normalize(&json!({"type": "mystery", "name": "x"})).is_err());
        assert!(normalize(&json!({"name": 5})).is_err());
        assert_eq!(
            normalize(&json!({"name": "x"})).unwrap().arguments,
            json!({})
        );
    }
}
