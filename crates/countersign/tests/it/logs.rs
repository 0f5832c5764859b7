//! What the log says when something fails inside: the operation, the tenant and the request
//! id, on one line; and the caller reads only the usual `internal` body.
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::*;

/// Everything the server logs during the test, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn a_store_failure_logs_one_line_naming_the_operation_tenant_and_request_id() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_env_filter("info")
        .try_init()
        .expect("this test's process has no other subscriber");
    let app = spawn_app().await;
    // The store loses a table behind the server's back: reading it fails inside.
    app.exec_sql("DROP TABLE mcp_servers").await;
    let response = app
        .http()
        .get(app.url("/v1/admin/mcp-servers"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("x-request-id"), "{message}");
    assert!(
        !message.contains("mcp_servers"),
        "the detail stays in the log: {message}"
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| (l.contains("ERROR") || l.contains("WARN")) && l.contains("list_mcp_servers"))
        .unwrap_or_else(|| panic!("no error line names the operation:\n{logs}"));
    assert!(line.contains(&request_id), "{line}");
    assert!(line.contains("tenant_id=default"), "{line}");
    assert!(
        line.contains("mcp_servers"),
        "the line says what failed: {line}"
    );
}
