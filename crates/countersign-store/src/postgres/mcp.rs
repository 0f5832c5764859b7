//! Registered MCP servers on PostgreSQL.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::audit::Actor;
use countersign_core::mcp::McpServerRecord;
use sqlx::postgres::PgRow;

use super::rows::{get, ms, pg_error, time};
use super::{PgStore, append_audit};
use crate::McpStore;
use crate::records::{MCP_SERVER_COLUMNS, headers_from_json, headers_json};
use crate::{audit_records, sql};

fn server(row: &PgRow) -> Result<McpServerRecord> {
    let headers: String = get(row, 3)?;
    Ok(McpServerRecord {
        tenant_id: get(row, 0)?,
        id: get(row, 1)?,
        url: get(row, 2)?,
        headers: headers_from_json(&headers)?,
        created_at: time(row, 4)?,
        updated_at: time(row, 5)?,
    })
}

#[async_trait]
impl McpStore for PgStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %record.tenant_id))]
    async fn create_mcp_server(&self, record: &McpServerRecord, actor: Actor) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&sql::pg(&sql::insert_mcp_server()))
            .bind(&record.tenant_id)
            .bind(&record.id)
            .bind(&record.url)
            .bind(headers_json(&record.headers)?)
            .bind(ms(record.created_at))
            .bind(ms(record.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        append_audit(
            &mut tx,
            audit_records::mcp_server(record, "mcp_server.created", &actor),
        )
        .await?;
        tx.commit().await.map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_mcp_servers(&self, tenant_id: &str) -> Result<Vec<McpServerRecord>> {
        sqlx::query(&sql::pg(&sql::list_mcp_servers()))
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?
            .iter()
            .map(server)
            .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_mcp_server(&self, tenant_id: &str, id: &str) -> Result<Option<McpServerRecord>> {
        sqlx::query(&sql::pg(&sql::get_mcp_server()))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(server)
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %record.tenant_id))]
    async fn update_mcp_server(&self, record: &McpServerRecord, actor: Actor) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(&sql::pg(sql::UPDATE_MCP_SERVER))
            .bind(&record.tenant_id)
            .bind(&record.id)
            .bind(&record.url)
            .bind(headers_json(&record.headers)?)
            .bind(ms(record.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        append_audit(
            &mut tx,
            audit_records::mcp_server(record, "mcp_server.updated", &actor),
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_mcp_server(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(&format!(
            "DELETE FROM mcp_servers WHERE tenant_id = $1 AND id = $2 RETURNING {MCP_SERVER_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(row) = deleted else {
            return Ok(false);
        };
        let mut record = server(&row)?;
        record.updated_at = at;
        append_audit(
            &mut tx,
            audit_records::mcp_server(&record, "mcp_server.deleted", &actor),
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }
}
