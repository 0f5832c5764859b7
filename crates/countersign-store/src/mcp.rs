//! Upstream MCP servers registered for the in-server gateway, for both backends.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::audit::Actor;
use countersign_core::mcp::McpServerRecord;

use crate::db::Db;
use crate::records::headers_json;
use crate::rows::server;
use crate::{audit_records, sql};

/// Upstream MCP servers registered for the in-server gateway. Writes carry their audit event
/// (`mcp_server.created|updated|deleted`, with the header names, never their values) in the
/// same transaction.
#[async_trait]
pub trait McpStore: Db {
    /// Registers a server; an id the tenant already uses is `AlreadyExists`.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %server.tenant_id))]
    async fn create_mcp_server(&self, server: &McpServerRecord, actor: Actor) -> Result<()> {
        let s = server.clone();
        write_tx!(self, |tx| {
            let headers = headers_json(&s.headers)?;
            let values = args![
                &s.tenant_id,
                &s.id,
                &s.url,
                &headers,
                s.created_at,
                s.updated_at
            ];
            tx.exec(&sql::insert_mcp_server(), values).await?;
            tx.audit(audit_records::mcp_server(&s, "mcp_server.created", &actor))
                .await?;
            Ok(())
        })
    }

    /// A tenant's servers, by id.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_mcp_servers(&self, tenant_id: &str) -> Result<Vec<McpServerRecord>> {
        let sql = sql::list_mcp_servers();
        self.reader()
            .await?
            .all(&sql, args![tenant_id], server)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_mcp_server(&self, tenant_id: &str, id: &str) -> Result<Option<McpServerRecord>> {
        let sql = sql::get_mcp_server();
        self.reader()
            .await?
            .one(&sql, args![tenant_id, id], server)
            .await
    }

    /// Replaces a server's URL, headers and `updated_at`; false when there is no such server.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %server.tenant_id))]
    async fn update_mcp_server(&self, server: &McpServerRecord, actor: Actor) -> Result<bool> {
        let s = server.clone();
        write_tx!(self, |tx| {
            let headers = headers_json(&s.headers)?;
            let values = args![&s.tenant_id, &s.id, &s.url, &headers, s.updated_at];
            if tx.exec(sql::UPDATE_MCP_SERVER, values).await? == 0 {
                return Ok(false);
            }
            tx.audit(audit_records::mcp_server(&s, "mcp_server.updated", &actor))
                .await?;
            Ok(true)
        })
    }

    /// False when there was no such server.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_mcp_server(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let key = args![&tenant_id, &id];
            let Some(mut s) = tx.one(&sql::get_mcp_server(), key, server).await? else {
                return Ok(false);
            };
            tx.exec(
                "DELETE FROM mcp_servers WHERE tenant_id = ?1 AND id = ?2",
                key,
            )
            .await?;
            s.updated_at = at;
            tx.audit(audit_records::mcp_server(&s, "mcp_server.deleted", &actor))
                .await?;
            Ok(true)
        })
    }
}

impl McpStore for crate::sqlite::SqliteStore {}
impl McpStore for crate::postgres::PgStore {}
