use super::*;
use crate::copy_from::format::CopyFormat;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

fn reader(options: &str, columns: usize) -> DelimitedReader {
    let sql = format!("COPY t FROM STDIN {options}");
    let Statement::Copy {
        options,
        legacy_options,
        ..
    } = Parser::parse_sql(&PostgreSqlDialect {}, &sql)
        .unwrap()
        .remove(0)
    else {
        panic!("not a COPY");
    };
    let names = (0..columns).map(|i| format!("c{i}")).collect();
    match CopyFormat::new(&options, &legacy_options).unwrap() {
        CopyFormat::Text(format) => DelimitedReader::new(format, false, names),
        CopyFormat::Csv(format) => DelimitedReader::new(format, true, names),
        CopyFormat::Binary => panic!("binary"),
    }
}

/// Every row of `pieces` (sent one after another) as optional strings.
fn read(reader: &mut DelimitedReader, pieces: &[&str], columns: usize) -> Vec<Vec<Option<String>>> {
    let mut rows = RawRows::new(columns);
    for piece in pieces {
        reader.push(piece.as_bytes(), &mut rows).unwrap();
    }
    reader.finish(&mut rows).unwrap();
    (0..rows.len())
        .map(|row| {
            (0..columns)
                .map(|column| {
                    let strings = rows.strings(column).unwrap();
                    let strings = strings
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::StringArray>()
                        .unwrap();
                    use datafusion::arrow::array::Array;
                    strings
                        .is_valid(row)
                        .then(|| strings.value(row).to_string())
                })
                .collect()
        })
        .collect()
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

#[test]
fn text_rows_split_anywhere_unescape_and_null() {
    let mut text = reader("", 2);
    let rows = read(
        &mut text,
        &["1\ta\\tb\n2", "\t\\N\n3\tx\\\\y\\101\n\\.\nignored\n"],
        2,
    );
    assert_eq!(
        rows,
        vec![
            some(&["1", "a\tb"]),
            vec![Some("2".into()), None],
            some(&["3", "x\\yA"])
        ]
    );
}

#[test]
fn csv_quotes_nulls_headers_and_line_breaks() {
    let mut csv = reader("(FORMAT csv, HEADER true)", 3);
    let rows = read(
        &mut csv,
        &[
            "id,s,t\n1,\"a,b\",\n2,\"\",\"x\"\"",
            "y\"\r\n3,\"multi\nline\",z",
        ],
        3,
    );
    assert_eq!(
        rows,
        vec![
            vec![Some("1".into()), Some("a,b".into()), None],
            some(&["2", "", "x\"y"]),
            some(&["3", "multi\nline", "z"]),
        ]
    );
    let mut forced = reader("(FORMAT csv, NULL 'NA', FORCE_NULL (c1))", 2);
    let rows = read(&mut forced, &["\"NA\",\"NA\"\nNA,x\n"], 2);
    assert_eq!(
        rows,
        vec![vec![Some("NA".into()), None], vec![None, Some("x".into())]]
    );
}

#[test]
fn bad_rows_say_what_is_wrong_and_where() {
    let mut text = reader("", 2);
    let mut rows = RawRows::new(2);
    text.push(b"1\ta\n2\n", &mut rows).unwrap_err();
    assert_eq!(text.line(), 2);
    let error = reader("", 2)
        .push(b"1\ta\tb\n", &mut RawRows::new(2))
        .unwrap_err();
    assert_eq!(error.message, "extra data after last expected column");
    let mut csv = reader("csv", 1);
    let mut rows = RawRows::new(1);
    csv.push(b"\"open", &mut rows).unwrap();
    let error = csv.finish(&mut rows).unwrap_err();
    assert_eq!(error.message, "unterminated CSV quoted field");
    let mut missing = reader("csv", 2);
    let error = missing.push(b"1,2\n3\n", &mut RawRows::new(2)).unwrap_err();
    assert_eq!(error.message, "missing data for column \"c1\"");
    assert_eq!(missing.line(), 2);
}

#[test]
fn a_row_that_never_ends_is_refused_not_kept() {
    let mut text = reader("", 1);
    let mut rows = RawRows::new(1);
    let piece = vec![b'x'; 1024 * 1024];
    let refused = (0..100).find_map(|_| text.push(&piece, &mut rows).err());
    let error = refused.expect("refused before 100 MiB");
    assert_eq!(
        error.code,
        crate::sqlstate::SqlState::PROGRAM_LIMIT_EXCEEDED
    );
}
