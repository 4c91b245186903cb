//! `generate_subscripts(array, dimension)`, which DataFusion does not have,
//! as `unnest(array_subscripts(array, dimension))`
//! ([`crate::pg_functions::array_subscripts`]): the array's subscripts, one
//! row each. Beside an `unnest(array)` in the same
//! `SELECT` list (SQLAlchemy's constraint reflection pairs
//! `unnest(pg_index.indkey)` with `generate_subscripts(pg_index.indkey, 1)`)
//! the two unnests advance together, as PostgreSQL's set-returning functions
//! do.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement,
};

use super::call;
use crate::pg_functions::array_subscripts::ARRAY_SUBSCRIPTS;

/// Rewrites every `generate_subscripts(a, d)` in `statement`; whether any
/// was.
pub(super) fn generate_subscripts_as_unnest(statement: &mut Statement) -> bool {
    let mut changed = false;
    let _ = visit_expressions_mut(statement, |expr| {
        if let Some(args) = generate_subscripts_args(expr) {
            *expr = call("unnest", vec![call(ARRAY_SUBSCRIPTS, args)]);
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// The two arguments of `expr` when it is `generate_subscripts(a, d)`.
fn generate_subscripts_args(expr: &Expr) -> Option<Vec<Expr>> {
    let Expr::Function(function) = expr else {
        return None;
    };
    let name = function.name.0.last()?.as_ident()?;
    if !name.value.eq_ignore_ascii_case("generate_subscripts") {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    list.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Some(expr.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .filter(|args| args.len() == 2)
}
