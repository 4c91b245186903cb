use std::sync::Arc;

use datafusion::arrow::error::ArrowError;
use datafusion::common::{Column, SchemaError};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use super::*;

#[test]
fn a_tagged_error_survives_the_text_of_a_failed_job() {
    let raised = PgError::new(SqlState::DIVISION_BY_ZERO, "division by zero")
        .with_hint("check \"b\"]\nfirst");
    let task_error = BallistaError::from(tag_task_error(raised.clone().into_datafusion()));
    // What Ballista sends the scheduler, and the frontend's job failure.
    let text = format!("Job 1 failed: Task failed due to runtime execution error: {task_error:?}");
    let arrived = DataFusionError::Execution(text);
    assert_eq!(pg_error(&arrived), raised);
}

#[test]
fn the_last_tag_wins_over_quoted_ones() {
    let quoted = PgError::new(SqlState::INSUFFICIENT_PRIVILEGE, "spoofed").to_string();
    let real = PgError::new(
        SqlState::INVALID_TEXT_REPRESENTATION,
        format!("bad '{quoted}'"),
    );
    assert_eq!(PgError::from_text(&real.to_string()), Some(real));
    assert_eq!(PgError::from_text("no tag [SQLSTATE 22012 !!!]"), None);
    assert_eq!(PgError::from_text("[SQLSTATE 2201 x]"), None);
}

#[test]
fn arrow_errors_on_executors_are_tagged_there() {
    let task_error = BallistaError::from(tag_task_error(DataFusionError::ArrowError(
        Box::new(ArrowError::DivideByZero),
        None,
    )));
    let arrived = DataFusionError::Execution(format!("Job 2 failed: {TASK_FAILED}{task_error:?}"));
    let pg = pg_error(&arrived);
    assert_eq!(pg.code, SqlState::DIVISION_BY_ZERO);
    assert_eq!(pg.message, "division by zero");
}

#[test]
fn a_tag_outside_a_failed_task_is_data() {
    let forged = PgError::new(SqlState::INSUFFICIENT_PRIVILEGE, "spoofed").to_string();
    // Typed errors quote values: a cast of a tag-shaped string.
    let cast = DataFusionError::ArrowError(
        Box::new(ArrowError::CastError(format!(
            "Cannot cast string '{forged}'"
        ))),
        None,
    );
    assert_eq!(pg_error(&cast).code, SqlState::INVALID_TEXT_REPRESENTATION);
    // On an executor the same error is tagged after the quoted value.
    let task_error = BallistaError::from(tag_task_error(cast));
    let arrived = DataFusionError::Execution(format!("Job 3 failed: {TASK_FAILED}{task_error:?}"));
    assert_eq!(
        pg_error(&arrived).code,
        SqlState::INVALID_TEXT_REPRESENTATION
    );
    // Text that is not a failed task's is not read for tags.
    let planned = DataFusionError::Plan(format!("no table {forged}"));
    assert_ne!(pg_error(&planned).code, SqlState::INSUFFICIENT_PRIVILEGE);
}

#[test]
fn errors_ballista_acts_on_are_left_alone() {
    let fetch = BallistaError::FetchFailed("e1".into(), 1, 2, "gone".into());
    let tagged = tag_task_error(DataFusionError::External(Box::new(fetch)));
    assert!(matches!(
        BallistaError::from(tagged),
        BallistaError::FetchFailed(..)
    ));
    let cancelled = DataFusionError::External(Box::new(BallistaError::Cancelled));
    assert!(matches!(
        BallistaError::from(tag_task_error(cancelled)),
        BallistaError::Cancelled
    ));
}

#[test]
fn a_pg_error_is_found_under_context() {
    let raised = PgError::new(SqlState::INSUFFICIENT_PRIVILEGE, "permission denied");
    let wrapped = DataFusionError::Context(
        "planning".into(),
        Box::new(DataFusionError::Shared(Arc::new(
            raised.clone().into_datafusion(),
        ))),
    );
    assert_eq!(pg_error(&wrapped), raised);
}

#[test]
fn every_code_is_five_digits_or_capitals() {
    for code in [
        SqlState::SUCCESSFUL_COMPLETION,
        SqlState::CONNECTION_FAILURE,
        SqlState::SYNTAX_ERROR,
        SqlState::UNDEFINED_TABLE,
        SqlState::INTERNAL_ERROR,
        SqlState::CANT_CHANGE_RUNTIME_PARAM,
    ] {
        assert_eq!(SqlState::parse(code.code()), Some(code));
    }
    assert_eq!(SqlState::parse("22o12"), None);
}

#[test]
fn missing_columns_read_as_postgres_says_them() {
    let error = DataFusionError::SchemaError(
        Box::new(SchemaError::FieldNotFound {
            field: Box::new(Column::new_unqualified("x")),
            valid_fields: vec![Column::new(Some("a"), "id")],
        }),
        Box::new(None),
    );
    let pg = pg_error(&error);
    assert_eq!(pg.code, SqlState::UNDEFINED_COLUMN);
    assert_eq!(pg.message, "column \"x\" does not exist");
    assert_eq!(pg.hint.as_deref(), Some("The columns in scope are a.id."));
}

#[tokio::test]
async fn datafusion_planning_errors_read_as_postgres_says_them() {
    let ctx = SessionContext::new();
    let error = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { pg_error(&ctx.sql(sql).await.expect_err(sql)) }
    };
    let missing = error("SELECT * FROM nope").await;
    assert_eq!(missing.code, SqlState::UNDEFINED_TABLE);
    assert_eq!(missing.message, "relation \"nope\" does not exist");
    let syntax = error("selec 1").await;
    assert_eq!(syntax.code, SqlState::SYNTAX_ERROR);
    assert_eq!(syntax.message, "syntax error at or near \"selec\"");
    assert!(syntax.detail.is_some());
    let end = error("SELECT 1 +").await;
    assert_eq!(end.message, "syntax error at end of input");
    let column = error("SELECT x FROM (VALUES (1)) AS t(a)").await;
    assert_eq!(column.code, SqlState::UNDEFINED_COLUMN);
    assert_eq!(column.message, "column \"x\" does not exist");
}

#[test]
fn a_connection_closed_under_a_call_is_an_unreachable_cluster() {
    // How a role refusing this one's certificate showed up (cluster_tls.rs).
    let text = "Status { code: Cancelled, message: \"operation was canceled\", source: \
                Some(tonic::transport::Error(Transport, hyper::Error(Canceled, \"connection \
                closed\"))) }";
    let error = DataFusionError::Execution(text.into());
    assert_eq!(pg_error(&error).code, SqlState::CONNECTION_FAILURE);
    let refused = DataFusionError::External(Box::new(tonic::Status::unavailable("down")));
    assert_eq!(pg_error(&refused).code, SqlState::CONNECTION_FAILURE);
}
