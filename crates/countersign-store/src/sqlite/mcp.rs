//! Registered MCP servers on SQLite.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::audit::Actor;
use countersign_core::mcp::McpServerRecord;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{db_error, ms, time};
use super::{SqliteStore, append_audit};
use crate::McpStore;
use crate::records::{headers_from_json, headers_json};
use crate::{audit_records, sql};

fn server(row: &Row) -> rusqlite::Result<McpServerRecord> {
    let headers: String = row.get(3)?;
    Ok(McpServerRecord {
        tenant_id: row.get(0)?,
        id: row.get(1)?,
        url: row.get(2)?,
        headers: headers_from_json(&headers).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: time(row, 4)?,
        updated_at: time(row, 5)?,
    })
}

fn server_in_tx(c: &Connection, tenant_id: &str, id: &str) -> Result<Option<McpServerRecord>> {
    c.prepare_cached(&sql::get_mcp_server())
        .and_then(|mut s| s.query_row([tenant_id, id], server).optional())
        .map_err(db_error)
}

#[async_trait]
impl McpStore for SqliteStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %record.tenant_id))]
    async fn create_mcp_server(&self, record: &McpServerRecord, actor: Actor) -> Result<()> {
        let record = record.clone();
        self.write(move |c| {
            let headers = headers_json(&record.headers)?;
            c.prepare_cached(&sql::insert_mcp_server())
                .and_then(|mut s| {
                    s.execute(params![
                        record.tenant_id,
                        record.id,
                        record.url,
                        headers,
                        ms(record.created_at),
                        ms(record.updated_at),
                    ])
                })
                .map_err(db_error)?;
            append_audit(
                c,
                audit_records::mcp_server(&record, "mcp_server.created", &actor),
            )?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_mcp_servers(&self, tenant_id: &str) -> Result<Vec<McpServerRecord>> {
        self.read(|c| {
            c.prepare_cached(&sql::list_mcp_servers())?
                .query_map([tenant_id], server)?
                .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_mcp_server(&self, tenant_id: &str, id: &str) -> Result<Option<McpServerRecord>> {
        self.read(|c| {
            c.prepare_cached(&sql::get_mcp_server())?
                .query_row([tenant_id, id], server)
                .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %record.tenant_id))]
    async fn update_mcp_server(&self, record: &McpServerRecord, actor: Actor) -> Result<bool> {
        let record = record.clone();
        self.write(move |c| {
            let headers = headers_json(&record.headers)?;
            let changed = c
                .prepare_cached(sql::UPDATE_MCP_SERVER)
                .and_then(|mut s| {
                    s.execute(params![
                        record.tenant_id,
                        record.id,
                        record.url,
                        headers,
                        ms(record.updated_at),
                    ])
                })
                .map_err(db_error)?;
            if changed == 0 {
                return Ok(false);
            }
            append_audit(
                c,
                audit_records::mcp_server(&record, "mcp_server.updated", &actor),
            )?;
            Ok(true)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_mcp_server(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let Some(mut record) = server_in_tx(c, &tenant_id, &id)? else {
                return Ok(false);
            };
            c.prepare_cached("DELETE FROM mcp_servers WHERE tenant_id = ?1 AND id = ?2")
                .and_then(|mut s| s.execute([&tenant_id, &id]))
                .map_err(db_error)?;
            record.updated_at = at;
            append_audit(
                c,
                audit_records::mcp_server(&record, "mcp_server.deleted", &actor),
            )?;
            Ok(true)
        })
        .await
    }
}
