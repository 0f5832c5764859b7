//! What a condition may cost. When saved, its shape is bounded (nesting, comprehensions,
//! literal sizes); when run, every comprehension iteration draws from a step budget that also
//! carries a wall-clock deadline, so a condition stops as soon as either runs out, whatever
//! the size of the call's arguments.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cel::common::ast::{CallExpr, EntryExpr, Expr, ListExpr, LiteralValue, operators};
use cel::{ExecutionError, IdedExpr, Value};

/// How deep the expanded expression tree may be.
pub const MAX_DEPTH: usize = 48;
/// How many comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) may run inside
/// one another: two already make the work grow with the square of the input.
pub const MAX_COMPREHENSION_NESTING: usize = 2;
/// Elements of one list or map literal.
pub const MAX_LITERAL_ELEMENTS: usize = 100;
/// Characters (or bytes) of one string (or bytes) literal.
pub const MAX_LITERAL_CHARS: usize = 1_000;
/// The function every comprehension iteration calls; no condition may name it.
pub(crate) const STEP_FUNCTION: &str = "__countersign_step";

/// Whether the expression has a comprehension anywhere.
pub(crate) fn iterates(e: &IdedExpr) -> bool {
    let entry = |entry: &cel::common::ast::IdedEntryExpr| match &entry.expr {
        EntryExpr::MapEntry(m) => iterates(&m.key) || iterates(&m.value),
        EntryExpr::StructField(f) => iterates(&f.value),
    };
    match &e.expr {
        Expr::Literal(_) | Expr::Ident(_) | Expr::Unspecified => false,
        Expr::Comprehension(_) => true,
        Expr::List(list) => list.elements.iter().any(iterates),
        Expr::Map(map) => map.entries.iter().any(entry),
        Expr::Struct(s) => s.entries.iter().any(entry),
        Expr::Select(s) => iterates(&s.operand),
        Expr::Call(call) => {
            call.target.as_deref().is_some_and(iterates) || call.args.iter().any(iterates)
        }
    }
}

/// Checks a condition's shape; the message says which bound it exceeds.
pub(crate) fn check_shape(expr: &IdedExpr) -> Result<(), String> {
    shape(expr, 1, 0)
}

fn shape(e: &IdedExpr, depth: usize, nesting: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("is nested more than {MAX_DEPTH} levels deep"));
    }
    let next = depth + 1;
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) if s.inner().chars().count() > MAX_LITERAL_CHARS => {
            Err(format!(
                "has a string literal longer than {MAX_LITERAL_CHARS} characters"
            ))
        }
        Expr::Literal(LiteralValue::Bytes(b)) if b.inner().len() > MAX_LITERAL_CHARS => Err(
            format!("has a bytes literal longer than {MAX_LITERAL_CHARS} bytes"),
        ),
        Expr::Literal(_) | Expr::Ident(_) | Expr::Unspecified => Ok(()),
        Expr::List(list) => {
            if list.elements.len() > MAX_LITERAL_ELEMENTS {
                return Err(format!(
                    "has a list literal with more than {MAX_LITERAL_ELEMENTS} elements"
                ));
            }
            list.elements
                .iter()
                .try_for_each(|x| shape(x, next, nesting))
        }
        Expr::Map(map) => {
            if map.entries.len() > MAX_LITERAL_ELEMENTS {
                return Err(format!(
                    "has a map literal with more than {MAX_LITERAL_ELEMENTS} entries"
                ));
            }
            map.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(m) => {
                    shape(&m.key, next, nesting)?;
                    shape(&m.value, next, nesting)
                }
                EntryExpr::StructField(f) => shape(&f.value, next, nesting),
            })
        }
        Expr::Struct(s) => s.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => {
                shape(&m.key, next, nesting)?;
                shape(&m.value, next, nesting)
            }
            EntryExpr::StructField(f) => shape(&f.value, next, nesting),
        }),
        Expr::Select(s) => shape(&s.operand, next, nesting),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                shape(target, next, nesting)?;
            }
            call.args.iter().try_for_each(|x| shape(x, next, nesting))
        }
        Expr::Comprehension(c) => {
            let inner = nesting + 1;
            if inner > MAX_COMPREHENSION_NESTING {
                return Err(format!(
                    "nests more than {MAX_COMPREHENSION_NESTING} comprehensions (all, exists, exists_one, map, filter) inside one another"
                ));
            }
            // The range and the initial value run once; the rest runs per element.
            shape(&c.iter_range, next, nesting)?;
            shape(&c.accu_init, next, nesting)?;
            shape(&c.loop_cond, next, inner)?;
            shape(&c.loop_step, next, inner)?;
            shape(&c.result, next, nesting)
        }
    }
}

/// The names comprehensions bind (`x` in `args.items.all(x, x > 0)`), which a condition may use
/// besides its variables.
pub(crate) fn bound_names(e: &IdedExpr, names: &mut std::collections::BTreeSet<String>) {
    match &e.expr {
        Expr::Literal(_) | Expr::Ident(_) | Expr::Unspecified => {}
        Expr::List(list) => list.elements.iter().for_each(|x| bound_names(x, names)),
        Expr::Map(map) => map.entries.iter().for_each(|x| entry_names(x, names)),
        Expr::Struct(s) => s.entries.iter().for_each(|x| entry_names(x, names)),
        Expr::Select(s) => bound_names(&s.operand, names),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                bound_names(target, names);
            }
            call.args.iter().for_each(|x| bound_names(x, names));
        }
        Expr::Comprehension(c) => {
            names.insert(c.iter_var.clone());
            names.extend(c.iter_var2.iter().cloned());
            names.insert(c.accu_var.clone());
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                bound_names(x, names);
            }
        }
    }
}

/// Whether the variable `name` is used other than through a field (`tool` rather than
/// `tool.name`): conditions saved when `tool` was the name string.
pub(crate) fn bare_use(e: &IdedExpr, name: &str) -> bool {
    let entry = |entry: &cel::common::ast::IdedEntryExpr| match &entry.expr {
        EntryExpr::MapEntry(m) => bare_use(&m.key, name) || bare_use(&m.value, name),
        EntryExpr::StructField(f) => bare_use(&f.value, name),
    };
    match &e.expr {
        Expr::Literal(_) | Expr::Unspecified => false,
        Expr::Ident(ident) => ident == name,
        Expr::List(list) => list.elements.iter().any(|x| bare_use(x, name)),
        Expr::Map(map) => map.entries.iter().any(entry),
        Expr::Struct(s) => s.entries.iter().any(entry),
        Expr::Select(s) => match &s.operand.expr {
            Expr::Ident(_) => false,
            _ => bare_use(&s.operand, name),
        },
        Expr::Call(call) => {
            call.target.as_deref().is_some_and(|t| bare_use(t, name))
                || call.args.iter().any(|x| bare_use(x, name))
        }
        Expr::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .any(|x| bare_use(x, name)),
    }
}

fn entry_names(
    entry: &cel::common::ast::IdedEntryExpr,
    names: &mut std::collections::BTreeSet<String>,
) {
    match &entry.expr {
        EntryExpr::MapEntry(m) => {
            bound_names(&m.key, names);
            bound_names(&m.value, names);
        }
        EntryExpr::StructField(f) => bound_names(&f.value, names),
    }
}

/// What one evaluation of a call's conditions may spend.
#[derive(Debug)]
pub struct Budget {
    steps_left: AtomicU64,
    deadline: Instant,
    ran_out: AtomicBool,
}

impl Budget {
    pub fn new(max_steps: u64, time_limit: Duration) -> Arc<Budget> {
        Arc::new(Budget {
            steps_left: AtomicU64::new(max_steps),
            deadline: Instant::now() + time_limit,
            ran_out: AtomicBool::new(false),
        })
    }

    /// Whether a step or the deadline ran out.
    pub fn ran_out(&self) -> bool {
        self.ran_out.load(Ordering::Relaxed)
    }

    fn step(&self) -> Result<Value, ExecutionError> {
        let steps = self
            .steps_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if steps.is_err() || Instant::now() >= self.deadline {
            self.ran_out.store(true, Ordering::Relaxed);
            return Err(ExecutionError::function_error(
                STEP_FUNCTION,
                "the condition's evaluation budget ran out",
            ));
        }
        Ok(Value::Bool(true))
    }

    /// Lets a context's comprehensions draw from this budget.
    pub(crate) fn install(self: &Arc<Self>, context: &mut cel::Context) -> Result<(), String> {
        let budget = self.clone();
        context
            .add_function(STEP_FUNCTION, move || budget.step())
            .map_err(|e| e.to_string())
    }
}

/// The expression with a budget step at the head of every comprehension iteration. The
/// interpreter's fast paths keep working: `all`/`exists` test their loop condition, and
/// `map`/`filter` their guard or appended element, so those are where the step goes.
pub(crate) fn metered(expr: &IdedExpr) -> IdedExpr {
    let mut expr = expr.clone();
    meter(&mut expr);
    expr
}

fn meter(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Literal(_) | Expr::Ident(_) | Expr::Unspecified => {}
        Expr::List(list) => list.elements.iter_mut().for_each(meter),
        Expr::Map(map) => map.entries.iter_mut().for_each(meter_entry),
        Expr::Struct(s) => s.entries.iter_mut().for_each(meter_entry),
        Expr::Select(s) => meter(&mut s.operand),
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                meter(target);
            }
            call.args.iter_mut().for_each(meter);
        }
        Expr::Comprehension(c) => {
            meter(&mut c.iter_range);
            meter(&mut c.accu_init);
            meter(&mut c.loop_cond);
            meter(&mut c.loop_step);
            meter(&mut c.result);
            let accu = c.accu_var.clone();
            if !matches!(c.loop_cond.expr, Expr::Literal(_)) {
                step_before(&mut c.loop_cond);
            } else if let Some(slot) = append_slot(&mut c.loop_step, &accu) {
                step_before(slot);
            } else {
                step_before(&mut c.loop_step);
            }
        }
    }
}

fn meter_entry(entry: &mut cel::common::ast::IdedEntryExpr) {
    match &mut entry.expr {
        EntryExpr::MapEntry(m) => {
            meter(&mut m.key);
            meter(&mut m.value);
        }
        EntryExpr::StructField(f) => meter(&mut f.value),
    }
}

/// In a `map`/`filter` step (`@result + [x]`, or `guard ? @result + [x] : @result`), the
/// guard or the appended element: what runs once per element.
fn append_slot<'e>(step: &'e mut IdedExpr, accu: &str) -> Option<&'e mut IdedExpr> {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(name) if name == accu);
    let Expr::Call(call) = &mut step.expr else {
        return None;
    };
    if call.target.is_some() {
        return None;
    }
    let guarded = call.func_name == operators::CONDITIONAL
        && call.args.len() == 3
        && call.args.get(2).is_some_and(is_accu);
    let appends = call.func_name == operators::ADD
        && call.args.len() == 2
        && call.args.first().is_some_and(is_accu)
        && matches!(call.args.get(1).map(|e| &e.expr), Some(Expr::List(l)) if l.elements.len() == 1);
    if guarded {
        call.args.first_mut()
    } else if appends {
        match call.args.get_mut(1).map(|e| &mut e.expr) {
            Some(Expr::List(ListExpr { elements, .. })) => elements.first_mut(),
            _ => None,
        }
    } else {
        None
    }
}

/// Rewrites `x` to `step() ? x : x`: the step runs first, then `x`, once.
fn step_before(slot: &mut IdedExpr) {
    let original = std::mem::take(slot);
    let step = IdedExpr {
        id: 0,
        expr: Expr::Call(CallExpr {
            func_name: STEP_FUNCTION.to_string(),
            target: None,
            args: Vec::new(),
        }),
    };
    *slot = IdedExpr {
        id: original.id,
        expr: Expr::Call(CallExpr {
            func_name: operators::CONDITIONAL.to_string(),
            target: None,
            args: vec![step, original.clone(), original],
        }),
    };
}
