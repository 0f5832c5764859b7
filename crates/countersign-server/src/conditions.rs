//! Policy conditions (and the other costly guard work) run off the request threads: on
//! blocking threads, a few at a time, each call's conditions within a step budget and a
//! deadline. Whatever a condition or its input
//! costs, the server keeps answering; a call whose conditions do not finish is blocked.
use std::sync::Arc;
use std::time::Duration;

use countersign_core::policy::{Budget, EvalInput, GuardConfig, OverBudget, Policy};
use countersign_core::{Error, Result};
use countersign_proto::guard::ToolAnnotations;
use tokio::sync::Semaphore;

use crate::settings::LimitSettings;

/// What a condition sees, owned, so it can move to another thread.
#[derive(Debug, Clone)]
pub struct OwnedInput {
    pub tool: String,
    pub args: serde_json::Value,
    pub agent_id: String,
    pub agent_name: String,
    pub trust_level: String,
    pub session: String,
    pub risk: f64,
    pub threats: Vec<String>,
    pub scope: String,
    pub annotations: Option<ToolAnnotations>,
    /// Empty when the call did not come through MCP.
    pub mcp_server: String,
}

impl OwnedInput {
    fn borrowed(&self) -> EvalInput<'_> {
        EvalInput {
            tool: &self.tool,
            args: &self.args,
            agent_id: &self.agent_id,
            agent_name: &self.agent_name,
            trust_level: &self.trust_level,
            session: &self.session,
            risk: self.risk,
            threats: &self.threats,
            scope: &self.scope,
            annotations: self.annotations.as_ref(),
            mcp_server: &self.mcp_server,
        }
    }
}

/// Why no policy decision came back in time: the call is blocked with this reason.
#[derive(Debug, Clone, PartialEq)]
pub enum Stopped {
    /// A condition used up the call's steps or time.
    OverBudget(OverBudget),
    /// Every evaluation thread stayed busy past the deadline, or the conditions did not
    /// return in time.
    Deadline,
}

impl Stopped {
    pub fn reason(&self) -> String {
        match self {
            Stopped::OverBudget(over) => over.reason(),
            Stopped::Deadline => {
                "the policy conditions could not be evaluated within their time limit".into()
            }
        }
    }
}

pub struct ConditionRunner {
    threads: Arc<Semaphore>,
    max_steps: u64,
    deadline: Duration,
}

impl ConditionRunner {
    pub fn new(limits: &LimitSettings) -> ConditionRunner {
        let workers = match limits.condition_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        };
        ConditionRunner {
            threads: Arc::new(Semaphore::new(workers)),
            max_steps: if limits.condition_max_steps == 0 {
                u64::MAX
            } else {
                limits.condition_max_steps
            },
            deadline: Duration::from_millis(limits.condition_deadline_ms.max(1)),
        }
    }

    /// Runs other costly guard work (canonicalising large arguments, compiling and dry-running
    /// conditions) on the same few threads, so together it never takes every core.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .threads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("the server is stopping".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Error::internal_msg(format!("guard work failed: {e}")))
    }

    /// The highest-priority policy that applies to the call, or why none could be found.
    pub async fn evaluate(
        &self,
        config: Arc<GuardConfig>,
        input: OwnedInput,
    ) -> Result<std::result::Result<Option<Policy>, Stopped>> {
        // Most calls cost a request thread a few microseconds; only comprehensions over large
        // arguments go to the evaluation threads.
        if !config.policies.may_be_costly(&input.args) {
            return Ok(config
                .policies
                .evaluate(
                    &input.borrowed(),
                    &Budget::new(self.max_steps, self.deadline),
                )
                .map(|p| p.cloned())
                .map_err(Stopped::OverBudget));
        }
        let started = tokio::time::Instant::now();
        let Ok(acquired) =
            tokio::time::timeout(self.deadline, self.threads.clone().acquire_owned()).await
        else {
            return Ok(Err(Stopped::Deadline));
        };
        let permit = acquired.map_err(|_| Error::Unavailable("the server is stopping".into()))?;
        let time_left = self.deadline.saturating_sub(started.elapsed());
        let max_steps = self.max_steps;
        let work = tokio::task::spawn_blocking(move || {
            // The permit is held until the thread is done, even when nobody waits any more,
            // so the threads busy with conditions stay bounded.
            let _permit = permit;
            let budget = Budget::new(max_steps, time_left);
            config
                .policies
                .evaluate(&input.borrowed(), &budget)
                .map(|p| p.cloned())
        });
        // The budget stops the conditions at the deadline; the margin covers one builtin
        // call on a large argument that runs past it.
        match tokio::time::timeout(time_left + self.deadline, work).await {
            Ok(Ok(outcome)) => Ok(outcome.map_err(Stopped::OverBudget)),
            Ok(Err(join)) => Err(Error::internal_msg(format!(
                "policy evaluation failed: {join}"
            ))),
            Err(_) => Ok(Err(Stopped::Deadline)),
        }
    }
}
