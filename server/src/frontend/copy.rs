//! `COPY (query) TO 'location' (FORMAT parquet|csv|json [, HEADER])` in
//! PostgreSQL's syntax, planned as DataFusion's `COPY … STORED AS …`.

use datafusion::sql::sqlparser::ast::{CopyOption, CopySource, CopyTarget, Statement};

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
