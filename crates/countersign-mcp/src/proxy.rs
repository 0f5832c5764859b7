//! The relay: an MCP server towards the client, an MCP client towards the upstream.
// Logging and resource subscriptions are deprecated after protocol 2025-11-25; the versions the
// proxy relays still have them.
#![allow(deprecated)]
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use countersign_proto::guard::PolicyAction;
use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult,
    CancelledNotification, CancelledNotificationParam, ClientNotification, ClientRequest,
    ClientResult, CompleteRequest, CompleteRequestParams, CompleteResult, ContentBlock,
    CustomNotification, CustomRequest, CustomResult, GetMeta, GetPromptRequest,
    GetPromptRequestParams, GetPromptResponse, InitializeRequestParams, InitializeResult,
    JsonRpcMessage, JsonRpcNotification, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, PingRequest,
    ProgressNotification, ProgressNotificationParam, ProgressToken, ProtocolVersion,
    ReadResourceRequest, ReadResourceRequestParams, ReadResourceResponse, RequestOptionalParam,
    RootsListChangedNotification, ServerNotification, ServerPeerInfo, ServerRequest, ServerResult,
    SetLevelRequest, SetLevelRequestParams, SubscribeRequest, SubscribeRequestParams,
    ToolAnnotations, UnsubscribeRequest, UnsubscribeRequestParams,
};
use rmcp::service::{
    NotificationContext, Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer,
    RunningService, Service, ServiceError,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::OnceCell;

use crate::guard::{Guard, McpCall};
use crate::held::{self, Held};
use crate::upstream::Upstream;

/// What reviewers see about the session a call belongs to.
#[derive(Debug, Clone)]
pub struct SessionOrigin {
    /// The upstream server's registered id or chosen name.
    pub server: String,
    /// The guard session every call of this MCP session belongs to.
    pub session_id: String,
}

/// What both halves of one relayed session share.
#[derive(Default)]
pub(crate) struct Link {
    /// The client, once it has initialised.
    downstream: parking_lot::Mutex<Option<Peer<RoleServer>>>,
    /// Annotations by tool name from the upstream's latest `tools/list`; `None` until listed or
    /// after the upstream said its list changed.
    annotations: parking_lot::Mutex<Option<HashMap<String, Option<ToolAnnotations>>>>,
    /// Progress tokens of forwarded requests: the one the upstream sees → the client's own.
    progress: parking_lot::Mutex<HashMap<ProgressToken, ProgressToken>>,
}

impl Link {
    /// Pass the upstream's progress on a forwarded request to the client, under the client's
    /// own token; progress on anything else is dropped.
    async fn relay_progress(&self, mut progress: ProgressNotificationParam) {
        let client_token = self.progress.lock().get(&progress.progress_token).cloned();
        let (Some(client_token), Some(downstream)) = (client_token, self.downstream()) else {
            return;
        };
        progress.progress_token = client_token;
        if let Err(e) = downstream.notify_progress(progress).await {
            tracing::debug!(error = %e, "could not relay progress");
        }
    }

    fn downstream(&self) -> Option<Peer<RoleServer>> {
        self.downstream.lock().clone()
    }

    fn learn_tools(&self, list: &ListToolsResult, first_page: bool) {
        let mut cache = self.annotations.lock();
        let known = cache.get_or_insert_with(HashMap::new);
        if first_page {
            known.clear();
        }
        for tool in &list.tools {
            known.insert(tool.name.to_string(), tool.annotations.clone());
        }
    }
}

/// One client session relayed to its upstream, with every `tools/call` checked by `G`.
pub struct Proxy<G: Guard> {
    guard: Arc<G>,
    upstream: Upstream,
    origin: SessionOrigin,
    link: Arc<Link>,
    running: OnceCell<RunningService<RoleClient, UpstreamRelay>>,
    client: OnceCell<String>,
}

impl<G: Guard> Proxy<G> {
    pub fn new(guard: Arc<G>, upstream: Upstream, origin: SessionOrigin) -> Proxy<G> {
        Proxy {
            guard,
            upstream,
            origin,
            link: Arc::new(Link::default()),
            running: OnceCell::new(),
            client: OnceCell::new(),
        }
    }

    fn upstream_peer(&self) -> Result<Peer<RoleClient>, McpError> {
        self.running
            .get()
            .map(|running| running.peer().clone())
            .ok_or_else(|| McpError::invalid_request("the session is not initialised", None))
    }

    async fn initialize_upstream(
        &self,
        params: InitializeRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        if self.running.initialized() {
            return Err(McpError::invalid_request(
                "the session is already initialised",
                None,
            ));
        }
        *self.link.downstream.lock() = Some(context.peer.clone());
        let client = &params.client_info;
        let _ = self.client.set(
            format!("{} {}", client.name, client.version)
                .trim()
                .to_string(),
        );
        let relay = UpstreamRelay {
            link: self.link.clone(),
            client_info: params,
        };
        let running = self
            .upstream
            .connect(relay, self.link.clone())
            .await
            .map_err(|e| McpError::internal_error(e, None))?;
        let info = running
            .peer()
            .peer_info()
            .map(|info| initialize_result(&info))
            .ok_or_else(|| McpError::internal_error("the upstream sent no server info", None))?;
        if self.running.set(running).is_err() {
            return Err(McpError::invalid_request(
                "the session is already initialised",
                None,
            ));
        }
        Ok(info)
    }

    async fn notify_upstream(
        &self,
        mut notification: ClientNotification,
        context: NotificationContext<RoleServer>,
    ) {
        let Ok(upstream) = self.upstream_peer() else {
            return;
        };
        *notification.get_meta_mut() = context.meta;
        if let Err(e) = upstream.send_notification(notification).await {
            tracing::debug!(error = %e, "could not relay a notification upstream");
        }
    }

    /// Send `request` upstream as the client's own, relaying progress and cancellation.
    async fn forward(
        &self,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let upstream = self.upstream_peer()?;
        let client_token = context.meta.get_progress_token();
        let options = PeerRequestOptions::no_options().with_meta(context.meta.clone());
        let handle = upstream
            .send_cancellable_request(request, options)
            .await
            .map_err(upstream_error)?;
        let upstream_token = handle.progress_token.clone();
        if let Some(client_token) = client_token {
            self.link
                .progress
                .lock()
                .insert(upstream_token.clone(), client_token);
        }
        let id = handle.id.clone();
        let answer = tokio::select! {
            answer = handle.await_response() => answer,
            _ = context.ct.cancelled() => {
                let cancel = CancelledNotification::new(
                    CancelledNotificationParam::new(Some(id), Some("cancelled by the client".into())),
                );
                if let Err(e) = upstream.send_notification(ClientNotification::CancelledNotification(cancel)).await {
                    tracing::debug!(error = %e, "could not relay a cancellation");
                }
                Err(ServiceError::Cancelled { reason: Some("cancelled by the client".into()) })
            }
        };
        self.link.progress.lock().remove(&upstream_token);
        answer.map_err(upstream_error)
    }

    /// The annotations the upstream declares for `tool`, listing its tools when not yet known.
    async fn annotations(&self, tool: &str) -> Option<ToolAnnotations> {
        if let Some(known) = self.link.annotations.lock().as_ref()
            && let Some(annotations) = known.get(tool)
        {
            return annotations.clone();
        }
        let upstream = self.upstream_peer().ok()?;
        let mut cursor = None;
        let mut first_page = true;
        // A bounded walk: a misbehaving upstream cannot keep the call waiting forever.
        for _ in 0..100 {
            let params = cursor.map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
            let page = match upstream.list_tools(params).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "could not list the upstream's tools");
                    return None;
                }
            };
            self.link.learn_tools(&page, first_page);
            first_page = false;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        self.link
            .annotations
            .lock()
            .as_ref()
            .and_then(|known| known.get(tool).cloned().flatten())
    }

    /// Check a `tools/call` with the guard, then forward it (as approved) or answer for it.
    async fn checked_call(
        &self,
        params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let name = params.name.to_string();
        let asked = McpCall {
            name: name.clone(),
            arguments: params.arguments.clone().unwrap_or_default(),
            annotations: self.annotations(&name).await,
            server: self.origin.server.clone(),
            client: self.client.get().cloned().filter(|c| !c.is_empty()),
            session_id: self.origin.session_id.clone(),
        };
        let decision = match self.guard.check(&asked).await {
            Ok(decision) => decision,
            Err(e) => {
                return Ok(tool_error(format!(
                    "Countersign could not check `{name}`, so it was not run: {e}"
                )));
            }
        };
        let arguments = match decision.action {
            PolicyAction::Allow => params.arguments.clone(),
            PolicyAction::Block => {
                return Ok(tool_error(format!(
                    "Countersign refused to run `{name}` ({})",
                    decision.message
                )));
            }
            PolicyAction::RequireApproval => {
                let Some(approval_id) = decision.approval_id.clone() else {
                    return Ok(tool_error(format!(
                        "`{name}` needs approval but Countersign opened no approval request"
                    )));
                };
                match held::hold(&*self.guard, &name, &decision, &approval_id, context).await {
                    Held::Approved(view) => {
                        if view.tool_name != name {
                            return Ok(tool_error(format!(
                                "approval {approval_id} is for `{}`, not `{name}`",
                                view.tool_name
                            )));
                        }
                        match view.arguments {
                            serde_json::Value::Object(approved) => Some(approved),
                            _ => {
                                return Ok(tool_error(format!(
                                    "approval {approval_id} carries no arguments object"
                                )));
                            }
                        }
                    }
                    Held::Refused(why) => return Ok(tool_error(why)),
                    // The client no longer waits for this answer (rmcp sends one regardless).
                    Held::Cancelled => {
                        return Ok(tool_error(format!(
                            "`{name}` was cancelled by the client; approval {approval_id} was withdrawn"
                        )));
                    }
                }
            }
        };
        let mut forwarded = CallToolRequestParams::new(Cow::Owned(name));
        forwarded.arguments = arguments;
        forwarded.input_responses = params.input_responses;
        forwarded.request_state = params.request_state;
        self.forward(
            ClientRequest::CallToolRequest(CallToolRequest::new(forwarded)),
            context,
        )
        .await
    }
}

/// The upstream's answer to `initialize`, as the client receives it.
fn initialize_result(info: &ServerPeerInfo) -> InitializeResult {
    let mut result = InitializeResult::new(info.capabilities.clone())
        .with_protocol_version(info.protocol_version.clone())
        .with_server_info(info.server_info.clone().unwrap_or_default());
    result.instructions = info.instructions.clone();
    result.meta = info.meta.clone();
    result
}

fn tool_error(text: String) -> ServerResult {
    ServerResult::CallToolResult(CallToolResult::error(vec![ContentBlock::text(text)]))
}

/// The upstream's own JSON-RPC errors reach the client unchanged; anything else is ours.
fn upstream_error(e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        other => McpError::internal_error(format!("the upstream MCP server: {other}"), None),
    }
}

/// Relays one request kind: wrap the params back into its request, forward it, and expect the
/// matching result.
macro_rules! relay {
    ($name:ident, $params:ty, $request:ident, $make:expr, $result:ty, $($answer:pat => $value:expr),+) => {
        async fn $name(
            &self,
            params: $params,
            context: RequestContext<RoleServer>,
        ) -> Result<$result, McpError> {
            let request = ClientRequest::$request($make(params));
            match self.forward(request, &context).await? {
                $($answer => Ok($value),)+
                other => Err(unexpected(other)),
            }
        }
    };
}

fn optional<M: Default, P>(params: Option<P>) -> RequestOptionalParam<M, P> {
    RequestOptionalParam {
        method: M::default(),
        params,
        extensions: Default::default(),
    }
}

fn unexpected(result: ServerResult) -> McpError {
    McpError::internal_error(
        "the upstream MCP server answered with the wrong kind of result",
        serde_json::to_value(&result).ok(),
    )
}

impl<G: Guard> ServerHandler for Proxy<G> {
    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), McpError> {
        let request = ClientRequest::PingRequest(PingRequest::default());
        self.forward(request, &context).await.map(|_| ())
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        self.initialize_upstream(request, &context).await
    }

    relay!(complete, CompleteRequestParams, CompleteRequest, CompleteRequest::new, CompleteResult,
        ServerResult::CompleteResult(r) => r);
    relay!(set_level, SetLevelRequestParams, SetLevelRequest, SetLevelRequest::new, (),
        ServerResult::EmptyResult(_) => ());
    relay!(get_prompt, GetPromptRequestParams, GetPromptRequest, GetPromptRequest::new, GetPromptResponse,
        ServerResult::GetPromptResult(r) => GetPromptResponse::Complete(r),
        ServerResult::InputRequiredResult(r) => GetPromptResponse::InputRequired(r));
    relay!(list_prompts, Option<PaginatedRequestParams>, ListPromptsRequest, optional, ListPromptsResult,
        ServerResult::ListPromptsResult(r) => r);
    relay!(list_resources, Option<PaginatedRequestParams>, ListResourcesRequest, optional, ListResourcesResult,
        ServerResult::ListResourcesResult(r) => r);
    relay!(list_resource_templates, Option<PaginatedRequestParams>, ListResourceTemplatesRequest, optional, ListResourceTemplatesResult,
        ServerResult::ListResourceTemplatesResult(r) => r);
    relay!(read_resource, ReadResourceRequestParams, ReadResourceRequest, ReadResourceRequest::new, ReadResourceResponse,
        ServerResult::ReadResourceResult(r) => ReadResourceResponse::Complete(r),
        ServerResult::InputRequiredResult(r) => ReadResourceResponse::InputRequired(r));
    relay!(subscribe, SubscribeRequestParams, SubscribeRequest, SubscribeRequest::new, (),
        ServerResult::EmptyResult(_) => ());
    relay!(unsubscribe, UnsubscribeRequestParams, UnsubscribeRequest, UnsubscribeRequest::new, (),
        ServerResult::EmptyResult(_) => ());
    relay!(on_custom_request, CustomRequest, CustomRequest, std::convert::identity, CustomResult,
        ServerResult::CustomResult(r) => r);

    async fn list_tools(
        &self,
        params: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let first_page = params.as_ref().is_none_or(|p| p.cursor.is_none());
        let request = ClientRequest::ListToolsRequest(optional(params));
        match self.forward(request, &context).await? {
            ServerResult::ListToolsResult(list) => {
                self.link.learn_tools(&list, first_page);
                Ok(list)
            }
            other => Err(unexpected(other)),
        }
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        match self.checked_call(params, &context).await? {
            ServerResult::CallToolResult(r) => Ok(CallToolResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
            ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
            other => Err(unexpected(other)),
        }
    }

    async fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        context: NotificationContext<RoleServer>,
    ) {
        let notification =
            ClientNotification::ProgressNotification(ProgressNotification::new(notification));
        self.notify_upstream(notification, context).await;
    }

    async fn on_roots_list_changed(&self, context: NotificationContext<RoleServer>) {
        let notification = ClientNotification::RootsListChangedNotification(
            RootsListChangedNotification::default(),
        );
        self.notify_upstream(notification, context).await;
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        context: NotificationContext<RoleServer>,
    ) {
        let notification = ClientNotification::CustomNotification(notification);
        self.notify_upstream(notification, context).await;
    }

    fn get_info(&self) -> InitializeResult {
        self.running
            .get()
            .and_then(|running| running.peer().peer_info())
            .map(|info| initialize_result(&info))
            .unwrap_or_else(|| InitializeResult::new(Default::default()))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Owned(crate::relayed_protocol_versions())
    }
}

/// The client side towards the upstream: its requests and notifications go to our client.
pub(crate) struct UpstreamRelay {
    link: Arc<Link>,
    client_info: InitializeRequestParams,
}

impl Service<RoleClient> for UpstreamRelay {
    async fn handle_request(
        &self,
        request: ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, McpError> {
        let Some(downstream) = self.link.downstream() else {
            return Err(McpError::internal_error("no client is connected", None));
        };
        let options = PeerRequestOptions::no_options().with_meta(context.meta.clone());
        let handle = downstream
            .send_cancellable_request(request, options)
            .await
            .map_err(upstream_error)?;
        let id = handle.id.clone();
        tokio::select! {
            answer = handle.await_response() => answer.map_err(upstream_error),
            _ = context.ct.cancelled() => {
                let cancel = CancelledNotification::new(
                    CancelledNotificationParam::new(Some(id), Some("cancelled by the server".into())),
                );
                let _ = downstream.send_notification(ServerNotification::CancelledNotification(cancel)).await;
                Err(McpError::invalid_request("cancelled", None))
            }
        }
    }

    async fn handle_notification(
        &self,
        mut notification: ServerNotification,
        context: NotificationContext<RoleClient>,
    ) -> Result<(), McpError> {
        match &mut notification {
            ServerNotification::CancelledNotification(_) => return Ok(()),
            // Relayed in order as they arrive (see `InOrder`).
            ServerNotification::ProgressNotification(_) => return Ok(()),
            ServerNotification::ToolListChangedNotification(_) => {
                *self.link.annotations.lock() = None;
            }
            _ => {}
        }
        let Some(downstream) = self.link.downstream() else {
            return Ok(());
        };
        *notification.get_meta_mut() = context.meta;
        downstream
            .send_notification(notification)
            .await
            .map_err(upstream_error)
    }

    fn get_info(&self) -> InitializeRequestParams {
        self.client_info.clone()
    }
}

/// The upstream's transport, relaying its progress notifications to the client as they arrive.
/// rmcp handles each incoming notification on a task of its own, so a progress notification
/// relayed from there could reach the client after the response it preceded, when the client no
/// longer listens for it; relayed here, it keeps its place in the stream.
pub(crate) struct InOrder<T> {
    pub(crate) inner: T,
    pub(crate) link: Arc<Link>,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for InOrder<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            match self.inner.receive().await? {
                JsonRpcMessage::Notification(JsonRpcNotification {
                    notification: ServerNotification::ProgressNotification(progress),
                    ..
                }) => self.link.relay_progress(progress.params).await,
                message => return Some(message),
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
