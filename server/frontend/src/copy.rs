//! `COPY (query) TO 'location' (FORMAT parquet|csv|json [, HEADER]
//! [, PARTITION_BY (column, …)])` in PostgreSQL's syntax, planned as
//! DataFusion's `COPY … STORED AS … [PARTITIONED BY (…)]`.

use datafusion::sql::sqlparser::ast::{CopyOption, CopySource, CopyTarget, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::hooks::PlanSource;

/// Recognises a PostgreSQL `COPY … TO 'location'` and gives the DataFusion
/// statement that runs it.
pub fn copy_to_file(statement: &Statement) -> Option<PlanSource> {
    let Statement::Copy {
        source,
        to: true,
        target: CopyTarget::File { filename },
        options,
        ..
    } = statement
    else {
        return None;
    };
    let source = match source {
        CopySource::Query(query) => format!("({query})"),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => table_name.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let columns: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("(SELECT {} FROM {table_name})", columns.join(", "))
        }
    };
    let mut format = None;
    let mut header = None;
    for option in options {
        match option {
            CopyOption::Format(name) => format = Some(name.value.to_lowercase()),
            CopyOption::Header(value) => header = Some(*value),
            other => {
                return Some(PlanSource::Unsupported(format!(
                    "COPY option {other} is not supported"
                )))
            }
        }
    }
    let format = format.unwrap_or_else(|| "csv".to_string());
    if !["parquet", "csv", "json"].contains(&format.as_str()) {
        return Some(PlanSource::Unsupported(format!(
            "COPY format {format} is not supported (use parquet, csv or json)"
        )));
    }
    let location = filename.replace('\'', "''");
    let mut sql = format!("COPY {source} TO '{location}' STORED AS {format}");
    if let Some(header) = header {
        sql.push_str(&format!(" OPTIONS ('format.has_header' '{header}')"));
    }
    Some(PlanSource::Sql(sql))
}

/// A PostgreSQL-style `COPY … TO 'location' (…)` whose options include
/// `PARTITION_BY (columns)` (which the PostgreSQL grammar has no room for),
/// as DataFusion's statement: `COPY … TO 'location' STORED AS format
/// PARTITIONED BY (columns) [OPTIONS (…)]`. `None` for anything else.
pub fn partitioned_copy(sql: &str) -> Option<String> {
    let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|token| !matches!(token, Token::Whitespace(_)))
        .collect();
    let is_word =
        |token: &Token, keyword: Keyword| matches!(token, Token::Word(w) if w.keyword == keyword);
    if !tokens.first().is_some_and(|t| is_word(t, Keyword::COPY)) {
        return None;
    }
    // `TO 'location'` at the top level, then one parenthesized option list.
    let mut depth = 0;
    let mut to = None;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            token if depth == 0 && is_word(token, Keyword::TO) => {
                to = Some(i);
                break;
            }
            _ => {}
        }
    }
    let to = to?;
    let Some(Token::SingleQuotedString(location)) = tokens.get(to + 1) else {
        return None;
    };
    let mut options = &tokens[to + 2..];
    while let Some((Token::SemiColon, rest)) = options.split_last() {
        options = rest;
    }
    let [Token::LParen, options @ .., Token::RParen] = options else {
        return None;
    };
    let (mut format, mut header, mut partitions) = (None, None, None);
    for option in split_top_level(options) {
        match option {
            [Token::Word(w), Token::Word(value)] if w.value.eq_ignore_ascii_case("format") => {
                format = Some(value.value.to_lowercase())
            }
            [Token::Word(w)] if w.value.eq_ignore_ascii_case("header") => header = Some(true),
            [Token::Word(w), Token::Word(value)] if w.value.eq_ignore_ascii_case("header") => {
                header = Some(value.value.eq_ignore_ascii_case("true"))
            }
            [Token::Word(w), Token::LParen, columns @ .., Token::RParen]
                if w.value.eq_ignore_ascii_case("partition_by") =>
            {
                let columns: Vec<String> = split_top_level(columns)
                    .into_iter()
                    .map(|column| match column {
                        [Token::Word(name)] => Some(name.to_string()),
                        _ => None,
                    })
                    .collect::<Option<_>>()?;
                partitions = Some(columns.join(", "));
            }
            _ => return None,
        }
    }
    let partitions = partitions?;
    let source: String = tokens[1..to]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let format = format.unwrap_or_else(|| "csv".into());
    let location = location.replace('\'', "''");
    let mut sql =
        format!("COPY {source} TO '{location}' STORED AS {format} PARTITIONED BY ({partitions})");
    if let Some(header) = header {
        sql.push_str(&format!(" OPTIONS ('format.has_header' '{header}')"));
    }
    Some(sql)
}

/// `tokens` split at the commas outside parentheses.
fn split_top_level(tokens: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioned_copies_become_datafusion_statements() {
        assert_eq!(
            partitioned_copy(
                "COPY (SELECT day, n FROM t WHERE x = 'a,b') TO '/out/' \
                 (FORMAT parquet, PARTITION_BY (day, region));"
            )
            .as_deref(),
            Some(
                "COPY ( SELECT day , n FROM t WHERE x = 'a,b' ) TO '/out/' STORED AS parquet \
                 PARTITIONED BY (day, region)"
            )
        );
        assert_eq!(
            partitioned_copy("copy t to 's3://b/p/' (format csv, header, partition_by (k))")
                .as_deref(),
            Some(
                "COPY t TO 's3://b/p/' STORED AS csv PARTITIONED BY (k) \
                 OPTIONS ('format.has_header' 'true')"
            )
        );
        // Without PARTITION_BY the PostgreSQL grammar reads it already.
        assert_eq!(partitioned_copy("COPY t TO '/x.csv' (FORMAT csv)"), None);
        assert_eq!(
            partitioned_copy("COPY t TO '/x' (PARTITION_BY (a + 1))"),
            None
        );
        assert_eq!(partitioned_copy("SELECT 1"), None);
    }
}
