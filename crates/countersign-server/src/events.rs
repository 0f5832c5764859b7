//! A per-process broadcast of approval-request lifecycle events, fed by the service functions
//! and, for changes made on other replicas, by the store's change hints. The dashboard's live
//! views listen to it; each listener filters to what its viewer may see.
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestEventKind {
    Created,
    Decided,
    Expired,
    /// Changed on another replica; read the store to learn how.
    Changed,
    /// Hints may have been lost: every view should re-read.
    Resync,
}

impl RequestEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestEventKind::Created => "created",
            RequestEventKind::Decided => "decided",
            RequestEventKind::Expired => "expired",
            RequestEventKind::Changed => "changed",
            RequestEventKind::Resync => "resync",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEvent {
    pub kind: RequestEventKind,
    /// Unknown for hints from other replicas.
    pub tenant_id: Option<String>,
    /// Absent for `Resync`.
    pub request_id: Option<String>,
}

#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<RequestEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl Events {
    pub fn publish(&self, kind: RequestEventKind, tenant_id: Option<&str>, request_id: &str) {
        // No listener is not an error: nobody is looking at the dashboard.
        let _ = self.sender.send(RequestEvent {
            kind,
            tenant_id: tenant_id.map(str::to_string),
            request_id: Some(request_id.to_string()),
        });
    }

    pub fn resync(&self) {
        let _ = self.sender.send(RequestEvent {
            kind: RequestEventKind::Resync,
            tenant_id: None,
            request_id: None,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RequestEvent> {
        self.sender.subscribe()
    }
}
