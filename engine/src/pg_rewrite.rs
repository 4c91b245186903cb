//! PostgreSQL behaviour that DataFusion's SQL planner does not have, applied
//! to the statement text before it is planned:
//!
//! - an unaliased function call in the outermost `SELECT` list is named after
//!   the function (`count`, `current_setting`), as PostgreSQL names it —
//!   DataFusion would call it `count(*)` or `current_setting(Utf8("…"))`, and
//!   clients that read results by column name (pandas, ORMs) look for
//!   PostgreSQL's name;
//! - `LIKE … ESCAPE 'c'` with an escape character other than backslash (what
//!   SQLAlchemy sends) becomes the equivalent backslash pattern;
//! - `generate_subscripts(array, 1)` becomes an `unnest` of the subscripts
//!   ([`subscripts`]);
//! - in catalog queries (those naming `pg_catalog`), a scalar subquery that
//!   does not aggregate gets `max(…)` around its one column: DataFusion plans
//!   correlated scalar subqueries only when they aggregate, and the catalog
//!   lookups ORMs send (a column's default, its collation) return at most one
//!   row, where `max` changes nothing.
//!
//! Statements are parsed the way datafusion-pg-catalog parses them (its
//! substitutions for known client catalog queries, then its rewrite rules),
//! so its rules still apply; when none of Sluice's rewrites applies, the text
//! goes on unchanged. Text the PostgreSQL dialect cannot parse (DataFusion-only
//! DDL) is left as it is.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::LazyLock;

use crate::pg_functions::WHEN_FUNCTION;
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, Query, SelectItem, SetExpr, Statement, Value, VisitMut,
    VisitorMut,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

mod subscripts;

static PARSER: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// `sql` with the rewrites applied, or `None` when nothing changes.
pub fn rewrite(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let named = if lower.contains("regproc") {
        regproc_literals_as_names(sql)
    } else {
        None
    };
    let lower = match &named {
        Some(named) => named.to_ascii_lowercase(),
        None => lower,
    };
    let catalog_query = lower.contains("pg_catalog");
    // Only a statement with a subquery can hold one to keep.
    let kept = if catalog_query || lower.matches("select").count() < 2 {
        None
    } else {
        one_row_subqueries_kept(named.as_deref().unwrap_or(sql))
    };
    let named = kept.or(named);
    let sql = named.as_deref().unwrap_or(sql);
    let Some(mut statements) = PARSER.parse(sql).ok() else {
        return named;
    };
    let mut changed = false;
    for statement in &mut statements {
        changed |= backslash_escapes(statement);
        changed |= lower.contains("generate_subscripts")
            && subscripts::generate_subscripts_as_unnest(statement);
        if catalog_query {
            changed |= aggregate_scalar_subqueries(statement);
        } else {
            changed |= name_function_columns(statement);
        }
    }
    if !changed {
        return named;
    }
    let rewritten = statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    tracing::debug!("rewrote statement to: {rewritten}");
    Some(rewritten)
}

/// `'pg_catalog.array_in'::regproc` as `'array_in'`, in statements the
/// Postgres dialect parses: Sluice's `pg_type` holds function names where
/// PostgreSQL holds `regproc` values (which compare by oid but print as the
/// name), and datafusion-pg-catalog would turn the cast into an oid that then
/// fails to compare with a name. `None` when there is no such cast (the
/// caller only asks when the text mentions `regproc`).
fn regproc_literals_as_names(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::DataType as SqlType;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    for statement in &mut statements {
        let _ = visit_expressions_mut(statement, |expr| {
            if let Expr::Cast {
                expr: inner,
                data_type: SqlType::Custom(name, modifiers),
                ..
            } = expr
            {
                let literal = match inner.as_ref() {
                    Expr::Value(value) => match &value.value {
                        Value::SingleQuotedString(text) => Some(text.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                if let (true, Some(qualified)) = (
                    modifiers.is_empty() && name.to_string().eq_ignore_ascii_case("regproc"),
                    literal,
                ) {
                    let function = qualified.rsplit('.').next().unwrap_or(&qualified);
                    *expr = text(function);
                    changed = true;
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    changed.then(|| {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(datafusion::sql::sqlparser::ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|arg| FunctionArg::Unnamed(FunctionArgExpr::Expr(arg)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn text(value: &str) -> Expr {
    Expr::Value(Value::SingleQuotedString(value.into()).into())
}

/// Rewrites `x LIKE p ESCAPE 'c'` into `x LIKE replace(replace(p, '\', '\\'), 'c', '\')`.
fn backslash_escapes(statement: &mut Statement) -> bool {
    let mut changed = false;
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
        {
            let escape = escape_char
                .as_ref()
                .and_then(|value| value.clone().into_string());
            if let Some(escape) =
                escape.filter(|escape| escape != "\\" && escape.chars().count() == 1)
            {
                let doubled = call(
                    "replace",
                    vec![(**pattern).clone(), text("\\"), text("\\\\")],
                );
                **pattern = call("replace", vec![doubled, text(&escape), text("\\")]);
                *escape_char = None;
                changed = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// Aggregate functions: a subquery calling one already returns one row.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
    "json_agg",
    "jsonb_agg",
];

fn is_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    let mut probe = expr.clone();
    let _ = visit_expressions_mut(&mut probe, |expr| {
        if let Expr::Function(function) = expr {
            let name = function.name.0.last().and_then(|part| part.as_ident());
            if name
                .is_some_and(|name| AGGREGATES.contains(&name.value.to_ascii_lowercase().as_str()))
            {
                found = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// `sql` with [`keep_one_row_subqueries`] applied before datafusion-pg-catalog
/// parses it (its rules run as it parses); `None` when nothing changes.
fn one_row_subqueries_kept(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    for statement in &mut statements {
        changed |= keep_one_row_subqueries(statement);
    }
    changed.then(|| {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Wraps each scalar subquery of a `SELECT` list that returns exactly one
/// row (one aggregate, no `GROUP BY`, `HAVING` or `LIMIT`) in parentheses, so
/// datafusion-pg-catalog's `RemoveSubqueryFromProjection` passes over it:
/// that rule replaces the correlated subqueries it recognises with NULL (a
/// correlated `count(*)` came back NULL) and gives the others `LIMIT 1`,
/// which DataFusion cannot decorrelate (`outer_ref(…) is not yet supported`
/// when a column of the outer query is named without its table). Such a
/// subquery needs neither: it has one row whatever it reads.
fn keep_one_row_subqueries(statement: &mut Statement) -> bool {
    struct Marker {
        changed: bool,
    }
    impl VisitorMut for Marker {
        type Break = ();

        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            let SetExpr::Select(select) = query.body.as_mut() else {
                return ControlFlow::Continue(());
            };
            for item in &mut select.projection {
                let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
                else {
                    continue;
                };
                if matches!(expr, Expr::Subquery(subquery) if returns_one_row(subquery)) {
                    *expr = Expr::Nested(Box::new(expr.clone()));
                    self.changed = true;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut marker = Marker { changed: false };
    let _ = statement.visit(&mut marker);
    marker.changed
}

/// Whether `query` returns exactly one row: a `SELECT` of one aggregate
/// (not a window function) without `GROUP BY`, `HAVING`, `LIMIT` or `FETCH`.
fn returns_one_row(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let ungrouped = matches!(
        &select.group_by,
        datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(exprs, _) if exprs.is_empty()
    );
    let one_aggregate = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }] => {
            is_aggregate(expr) && !has_window(expr)
        }
        _ => false,
    };
    ungrouped
        && one_aggregate
        && select.having.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
}

/// Whether `expr` calls a function with `OVER (…)`.
fn has_window(expr: &Expr) -> bool {
    let mut probe = expr.clone();
    visit_expressions_mut(&mut probe, |expr| match expr {
        Expr::Function(function) if function.over.is_some() => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// `CASE WHEN c THEN (subquery) [ELSE NULL] END` as
/// `sluice_when(c, (subquery))`: the same value, in a form DataFusion can
/// decorrelate (it plans subqueries in function arguments, not in `CASE`
/// branches).
fn case_to_function(expr: &mut Expr) -> bool {
    let Expr::Case {
        operand: None,
        conditions,
        else_result,
        ..
    } = expr
    else {
        return false;
    };
    let else_is_null = match else_result.as_deref() {
        None => true,
        Some(Expr::Value(value)) => matches!(value.value, Value::Null),
        Some(_) => false,
    };
    if !else_is_null || conditions.len() != 1 || !contains_subquery(&conditions[0].result) {
        return false;
    }
    let when = conditions.remove(0);
    *expr = call(WHEN_FUNCTION, vec![when.condition, when.result]);
    true
}

fn contains_subquery(expr: &Expr) -> bool {
    let mut probe = expr.clone();
    visit_expressions_mut(&mut probe, |expr| match expr {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Catalog tables that are always empty in Sluice (no sequences, no column
/// defaults; `postgres_settings.slt` checks it): a scalar subquery reading
/// one without aggregating is NULL.
const EMPTY_CATALOG_TABLES: &[&str] = &["pg_sequence", "pg_attrdef"];

/// Whether `select` reads only tables of [`EMPTY_CATALOG_TABLES`] (joined
/// with anything, it returns no row either).
fn reads_empty_table(select: &datafusion::sql::sqlparser::ast::Select) -> bool {
    use datafusion::sql::sqlparser::ast::TableFactor;
    select.from.iter().any(|table| {
        std::iter::once(&table.relation)
            .chain(table.joins.iter().map(|join| &join.relation))
            .any(|factor| match factor {
                TableFactor::Table { name, .. } => name
                    .0
                    .last()
                    .is_some_and(|last| EMPTY_CATALOG_TABLES.contains(&last.to_string().as_str())),
                _ => false,
            })
    })
}

/// NULL, still mentioning each parameter of `expr` (with its cast): the
/// client binds parameters by position, and datafusion-postgres lists the
/// types of those the plan mentions.
fn null_keeping_parameters(expr: &Expr) -> Expr {
    let mut parameters: Vec<Expr> = vec![];
    let mut probe = expr.clone();
    let _ = visit_expressions_mut(&mut probe, |expr| {
        let is_parameter = |expr: &Expr| matches!(expr, Expr::Value(v) if matches!(v.value, Value::Placeholder(_)));
        match expr {
            Expr::Cast { expr: inner, .. } if is_parameter(inner) => parameters.push(expr.clone()),
            expr if is_parameter(expr) => parameters.push(expr.clone()),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    // The walk meets `$1` before `$1::INTEGER`: keep the cast form only.
    let casts: Vec<Expr> = parameters
        .iter()
        .filter_map(|p| match p {
            Expr::Cast { expr: inner, .. } => Some(inner.as_ref().clone()),
            _ => None,
        })
        .collect();
    parameters.retain(|p| matches!(p, Expr::Cast { .. }) || !casts.contains(p));
    let null = Expr::Value(Value::Null.into());
    let Some(condition) = and_all(
        parameters
            .into_iter()
            .map(|parameter| Expr::IsNull(Box::new(parameter)))
            .collect(),
    ) else {
        return null;
    };
    Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions: vec![datafusion::sql::sqlparser::ast::CaseWhen {
            condition,
            result: null.clone(),
        }],
        else_result: Some(Box::new(null)),
    }
}

/// Names a subquery's own tables go by: aliases, or full and last names.
fn inner_names(select: &datafusion::sql::sqlparser::ast::Select) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::TableFactor;
    let mut names = vec![];
    for table in &select.from {
        for factor in
            std::iter::once(&table.relation).chain(table.joins.iter().map(|j| &j.relation))
        {
            if let TableFactor::Table { name, alias, .. } = factor {
                match alias {
                    Some(alias) => names.push(alias.name.value.clone()),
                    None => {
                        names.push(name.to_string());
                        if let Some(last) = name.0.last() {
                            names.push(last.to_string());
                        }
                    }
                }
            }
        }
    }
    names
}

/// Whether `conjunct` only reads columns qualified by tables outside `inner`.
fn is_outer_only(conjunct: &Expr, inner: &[String]) -> bool {
    let mut outer_columns = 0;
    let mut other = false;
    let mut probe = conjunct.clone();
    let _ = visit_expressions_mut(&mut probe, |expr| {
        match expr {
            Expr::CompoundIdentifier(parts) if parts.len() > 1 => {
                let qualifier = parts[..parts.len() - 1]
                    .iter()
                    .map(|part| part.value.clone())
                    .collect::<Vec<_>>()
                    .join(".");
                if inner.contains(&qualifier) {
                    other = true;
                } else {
                    outer_columns += 1;
                }
            }
            Expr::Identifier(_) | Expr::Subquery(_) | Expr::Exists { .. } => other = true,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    outer_columns > 0 && !other
}

/// Whether `select` reads a column qualified by a table not its own.
fn references_outer(select: &datafusion::sql::sqlparser::ast::Select, inner: &[String]) -> bool {
    let mut probe = select.clone();
    let mut found = false;
    let _ = visit_expressions_mut(&mut probe, |expr| {
        if let Expr::CompoundIdentifier(parts) = expr {
            let qualifier = parts[..parts.len().saturating_sub(1)]
                .iter()
                .map(|part| part.value.clone())
                .collect::<Vec<_>>()
                .join(".");
            if parts.len() > 1 && !inner.contains(&qualifier) {
                found = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

fn conjuncts(expr: Expr, into: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, into);
            conjuncts(*right, into);
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, into)
        }
        other => into.push(other),
    }
}

fn and_all(exprs: Vec<Expr>) -> Option<Expr> {
    exprs.into_iter().reduce(|left, right| Expr::BinaryOp {
        left: Box::new(left),
        op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
        right: Box::new(right),
    })
}

/// Prepares each scalar subquery for DataFusion's decorrelation: its one
/// column aggregated with `max` if it does not aggregate, and conditions on
/// the outer row alone taken out of its `WHERE` into `sluice_when(…)` around
/// it (DataFusion cannot decorrelate a subquery filtering on outer columns
/// alone). `CASE … THEN (subquery)` becomes `sluice_when` first.
fn aggregate_scalar_subqueries(statement: &mut Statement) -> bool {
    let mut changed = false;
    let _ = visit_expressions_mut(statement, |expr| {
        changed |= case_to_function(expr);
        let Expr::Subquery(query) = expr else {
            return ControlFlow::<()>::Continue(());
        };
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let grouped = !matches!(
            &select.group_by,
            datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(exprs, _) if exprs.is_empty()
        );
        if grouped || select.projection.len() != 1 {
            return ControlFlow::Continue(());
        }
        let inner = inner_names(select);
        if !references_outer(select, &inner) {
            // DataFusion plans uncorrelated subqueries as they are.
            return ControlFlow::Continue(());
        }
        let empty = reads_empty_table(select);
        let column = match &mut select.projection[0] {
            SelectItem::UnnamedExpr(column) | SelectItem::ExprWithAlias { expr: column, .. } => {
                column
            }
            _ => return ControlFlow::Continue(()),
        };
        if is_aggregate(column) {
            return ControlFlow::Continue(());
        }
        if empty {
            *expr = null_keeping_parameters(expr);
            changed = true;
            return ControlFlow::Continue(());
        }
        *column = call("max", vec![column.clone()]);
        changed = true;
        let mut all = vec![];
        if let Some(selection) = select.selection.take() {
            conjuncts(selection, &mut all);
        }
        let (outer, kept): (Vec<Expr>, Vec<Expr>) = all
            .into_iter()
            .partition(|conjunct| is_outer_only(conjunct, &inner));
        select.selection = and_all(kept);
        if let Some(outer) = and_all(outer) {
            let subquery = std::mem::replace(expr, Expr::Value(Value::Null.into()));
            *expr = call(WHEN_FUNCTION, vec![outer, subquery]);
            changed = true;
        }
        ControlFlow::Continue(())
    });
    changed
}

/// The name PostgreSQL gives a `SELECT` item, when it is a function's.
fn function_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::UnnamedExpr(Expr::Function(function)) => function
            .name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .map(|ident| ident.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// The output name of an item that is not a function call, if plain.
fn plain_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::UnnamedExpr(Expr::Identifier(ident)) => Some(ident.value.clone()),
        SelectItem::UnnamedExpr(Expr::CompoundIdentifier(idents)) => {
            idents.last().map(|ident| ident.value.clone())
        }
        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
        _ => None,
    }
}

/// Aliases unaliased function calls of the outermost `SELECT` list to the
/// function's name, where that name is unique in the list.
fn name_function_columns(statement: &mut Statement) -> bool {
    let Statement::Query(query) = statement else {
        return false;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for item in &select.projection {
        if let Some(name) = function_name(item).or_else(|| plain_name(item)) {
            *counts.entry(name).or_default() += 1;
        }
    }
    let mut changed = false;
    for item in &mut select.projection {
        let Some(name) = function_name(item) else {
            continue;
        };
        if counts.get(&name) != Some(&1) {
            continue;
        }
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::with_quote('"', name),
        };
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn function_columns_get_postgres_names() {
        assert_eq!(
            rewrite("SELECT count(*), max(x) FROM t").as_deref(),
            Some("SELECT count(*) AS \"count\", max(x) AS \"max\" FROM t")
        );
        // Duplicates keep DataFusion's distinct names.
        assert_eq!(rewrite("SELECT count(*), count(x) FROM t"), None);
        assert_eq!(rewrite("SELECT a, b AS c FROM t"), None);
        assert_eq!(
            rewrite("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'x'"),
            None
        );
    }

    #[test]
    fn catalog_subqueries_aggregate() {
        assert_eq!(
            rewrite(
                "SELECT CASE WHEN a.atthasdef THEN (SELECT d.x FROM pg_catalog.pg_type d \
                 WHERE d.adrelid = a.attrelid) END FROM pg_catalog.pg_attribute a"
            )
            .as_deref(),
            Some(
                "SELECT sluice_when(a.atthasdef, (SELECT max(d.x) FROM pg_catalog.pg_type d \
                 WHERE d.adrelid = a.attrelid)) FROM pg_catalog.pg_attribute a"
            )
        );
    }

    #[test]
    fn subqueries_over_empty_catalog_tables_are_null() {
        assert_eq!(
            rewrite(
                "SELECT a.attname FROM pg_catalog.pg_attribute a WHERE (SELECT s.seqstart \
                 FROM pg_catalog.pg_sequence s WHERE s.seqrelid = a.attrelid AND s.seqmin > $1::INTEGER) IS NULL"
            )
            .as_deref(),
            Some(
                "SELECT a.attname FROM pg_catalog.pg_attribute a WHERE CASE WHEN $1::INTEGER IS NULL \
                 THEN NULL ELSE NULL END IS NULL"
            )
        );
    }

    #[test]
    fn like_escapes_become_backslashes() {
        assert_eq!(
            rewrite("SELECT a FROM t WHERE a NOT LIKE 'pg/_%' ESCAPE '/'").as_deref(),
            Some(
                "SELECT a FROM t WHERE a NOT LIKE replace(replace('pg/_%', '\\', '\\\\'), '/', '\\')"
            )
        );
    }
}
