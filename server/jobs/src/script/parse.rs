//! A SQL script as `sluice run` takes it: `${name}` variables substituted,
//! then split into statements, each with the line it starts on.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Line (from 1) of the statement's first token.
    pub line: u64,
    /// The statement's text, without its terminating semicolon.
    pub sql: String,
}

/// Why a script cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptError {
    /// `${name}` variables with no value, in order of name.
    MissingVariables(Vec<String>),
    /// A variable whose value would change the script's line numbers.
    MultiLineValue(String),
    /// The text cannot be split into statements (an unterminated string or
    /// comment), at `line`.
    Syntax {
        /// The 1-based line the problem starts on.
        line: u64,
        /// What is wrong there.
        message: String,
    },
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingVariables(names) => {
                let names: Vec<String> = names.iter().map(|n| format!("${{{n}}}")).collect();
                write!(
                    f,
                    "no value for {} (give it with --var NAME=VALUE)",
                    names.join(", ")
                )
            }
            Self::MultiLineValue(name) => {
                write!(f, "the value of ${{{name}}} spans several lines")
            }
            Self::Syntax { line, message } => write!(f, "line {line}: {message}"),
        }
    }
}

/// Replaces every `${name}` in `text` with its value in `vars`. A name made
/// of anything but letters, digits and `_` is left as it is.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, ScriptError> {
    let mut out = String::with_capacity(text.len());
    let mut missing = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_end = after.find('}');
        let name = name_end.map(|end| &after[..end]);
        match name {
            Some(name)
                if !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                match vars.get(name) {
                    Some(value) if value.contains('\n') => {
                        return Err(ScriptError::MultiLineValue(name.to_string()))
                    }
                    Some(value) => out.push_str(value),
                    None => {
                        missing.insert(name.to_string());
                    }
                }
                rest = &after[name.len() + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(ScriptError::MissingVariables(missing.into_iter().collect()))
    }
}

/// Splits `text` into its statements at top-level semicolons (not those in
/// strings, quoted names or comments). Statements holding only comments are
/// dropped.
pub fn split(text: &str) -> Result<Vec<Statement>, ScriptError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| ScriptError::Syntax {
            line: e.location.line,
            message: e.message,
        })?;
    let offsets = LineOffsets::new(text);
    let mut statements = Vec::new();
    // The first token of the current statement that is not whitespace or a
    // comment: where its text starts.
    let mut first: Option<(u64, usize)> = None;
    for token in &tokens {
        match &token.token {
            Token::SemiColon => {
                if let Some((line, start)) = first.take() {
                    let end = offsets.byte(text, token.span.start.line, token.span.start.column);
                    statements.push(Statement {
                        line,
                        sql: text[start..end].trim_end().to_string(),
                    });
                }
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ if first.is_none() => {
                let start = token.span.start;
                first = Some((start.line, offsets.byte(text, start.line, start.column)));
            }
            _ => {}
        }
    }
    if let Some((line, start)) = first {
        statements.push(Statement {
            line,
            sql: text[start..].trim_end().to_string(),
        });
    }
    Ok(statements)
}

/// Byte offsets of line starts, to turn the tokenizer's line and column
/// (counted in characters) into positions in the text.
struct LineOffsets(Vec<usize>);

impl LineOffsets {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self(starts)
    }

    fn byte(&self, text: &str, line: u64, column: u64) -> usize {
        let line_start = self
            .0
            .get((line.max(1) - 1) as usize)
            .copied()
            .unwrap_or(text.len());
        text[line_start..]
            .char_indices()
            .nth((column.max(1) - 1) as usize)
            .map_or(text.len(), |(i, _)| line_start + i)
    }
}

/// The name (without schema) of the table or view `sql` creates, if it
/// creates one: `CREATE [EXTERNAL] TABLE`, `CREATE VIEW`.
pub fn created_relation(sql: &str) -> Option<String> {
    use datafusion::sql::parser::{DFParser, Statement as DFStatement};
    use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
    let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).ok()?;
    let name = match statements.pop_front()? {
        DFStatement::CreateExternalTable(create) => create.name.to_string(),
        DFStatement::Statement(statement) => match *statement {
            SqlStatement::CreateTable(create) => create.name.to_string(),
            SqlStatement::CreateView(create) => create.name.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some(
        name.rsplit('.')
            .next()
            .unwrap_or(&name)
            .trim_matches('"')
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_relations_statements_create() {
        for (sql, name) in [
            ("CREATE TABLE s.daily AS SELECT 1", Some("daily")),
            (
                "CREATE EXTERNAL TABLE raw STORED AS CSV LOCATION '/x.csv'",
                Some("raw"),
            ),
            ("CREATE VIEW v AS SELECT 1", Some("v")),
            ("INSERT INTO t VALUES (1)", None),
        ] {
            assert_eq!(created_relation(sql).as_deref(), name, "{sql}");
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_are_replaced_everywhere() {
        let text = "SELECT '${day}' AS d, ${n} + 1 FROM t_${region};";
        let out = substitute(
            text,
            &vars(&[("day", "2026-11-30"), ("n", "41"), ("region", "eu")]),
        )
        .unwrap();
        assert_eq!(out, "SELECT '2026-11-30' AS d, 41 + 1 FROM t_eu;");
    }

    #[test]
    fn every_missing_variable_is_named() {
        let err = substitute("SELECT ${b}, ${a}, ${b}", &vars(&[])).unwrap_err();
        assert_eq!(
            err,
            ScriptError::MissingVariables(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            err.to_string(),
            "no value for ${a}, ${b} (give it with --var NAME=VALUE)"
        );
    }

    #[test]
    fn dollar_signs_that_are_not_variables_stay() {
        let text = "SELECT $1, '${', $$body$$, ${not a name}";
        assert_eq!(substitute(text, &vars(&[])).unwrap(), text);
    }

    #[test]
    fn multi_line_values_are_refused() {
        let err = substitute("SELECT ${x}", &vars(&[("x", "1\n2")])).unwrap_err();
        assert_eq!(err, ScriptError::MultiLineValue("x".into()));
    }

    #[test]
    fn statements_split_at_top_level_semicolons_with_their_lines() {
        let text = "-- a pipeline\n\
                    CREATE EXTERNAL TABLE raw STORED AS CSV LOCATION '/d;x/';\n\
                    \n\
                    /* two; statements */ SELECT 'a;b', \"odd;name\"\n\
                    FROM raw;   -- trailing; comment\n\
                    SELECT $$x;y$$;\n\
                    SELECT 3";
        let statements = split(text).unwrap();
        assert_eq!(
            statements,
            vec![
                Statement {
                    line: 2,
                    sql: "CREATE EXTERNAL TABLE raw STORED AS CSV LOCATION '/d;x/'".into()
                },
                Statement {
                    line: 4,
                    sql: "SELECT 'a;b', \"odd;name\"\nFROM raw".into()
                },
                Statement {
                    line: 6,
                    sql: "SELECT $$x;y$$".into()
                },
                Statement {
                    line: 7,
                    sql: "SELECT 3".into()
                },
            ]
        );
    }

    #[test]
    fn empty_statements_and_comments_only_are_dropped() {
        assert_eq!(split(";; -- nothing\n/* here */;").unwrap(), vec![]);
    }

    #[test]
    fn non_ascii_text_keeps_its_characters() {
        let statements = split("SELECT 'héllo wörld' AS ü;\nSELECT 'ß';").unwrap();
        assert_eq!(statements[0].sql, "SELECT 'héllo wörld' AS ü");
        assert_eq!(statements[1].sql, "SELECT 'ß'");
        assert_eq!(statements[1].line, 2);
    }

    #[test]
    fn an_unterminated_string_is_reported_with_its_line() {
        let err = split("SELECT 1;\nSELECT 'open").unwrap_err();
        assert!(
            matches!(err, ScriptError::Syntax { line: 2, .. }),
            "{err:?}"
        );
    }
}
