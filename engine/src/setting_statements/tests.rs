use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::*;

fn parse(sql: &str) -> Statement {
    Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .unwrap()
        .remove(0)
}

fn recognise(sql: &str) -> Option<SettingStatement> {
    SettingStatement::recognise(&parse(sql))
}

#[test]
fn recognises_postgres_parameter_statements() {
    let set = |name: &str, value: Option<&str>| {
        Some(SettingStatement::Set(name.into(), value.map(Into::into)))
    };
    assert_eq!(
        recognise("SET search_path = public, sluice"),
        set("search_path", Some("public, sluice"))
    );
    assert_eq!(
        recognise("SET statement_timeout TO '2s'"),
        set("statement_timeout", Some("2s"))
    );
    assert_eq!(
        recognise("SET extra_float_digits = 3"),
        set("extra_float_digits", Some("3"))
    );
    assert_eq!(
        recognise("SET TIME ZONE 'UTC'"),
        set("TimeZone", Some("UTC"))
    );
    assert_eq!(
        recognise("SET DateStyle TO DEFAULT"),
        set("DateStyle", None)
    );
    assert_eq!(recognise("SET datafusion.execution.batch_size = 1"), None);
    assert_eq!(recognise("SHOW ALL"), None);
    assert_eq!(
        recognise("SHOW TRANSACTION ISOLATION LEVEL"),
        Some(SettingStatement::Show("transaction_isolation".into()))
    );
    assert_eq!(
        recognise("DISCARD ALL"),
        Some(SettingStatement::ResetAll("DISCARD ALL"))
    );
}

#[test]
fn finds_set_config_calls() {
    let statement = parse("SELECT pg_catalog.set_config('search_path', '', false)");
    assert_eq!(
        set_config_calls(&statement, &ParamValues::List(vec![])),
        vec![("search_path".to_string(), String::new())]
    );
}

#[test]
fn refuses_storage_settings_however_spelled() {
    assert!(storage_set_refusal(&parse("SET storage.s3.endpoint = 'x'")).is_some());
    assert!(storage_set_refusal(&parse("SET \"STORAGE\".s3.endpoint = 'x'")).is_some());
    assert!(storage_set_refusal(&parse("RESET storage.s3.endpoint")).is_some());
    assert!(storage_set_refusal(&parse("RESET ALL")).is_none());
    assert!(storage_set_refusal(&parse("SET search_path = public")).is_none());
}
