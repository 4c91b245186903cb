//! TPC-H reference answers and the comparison of results against them.
//!
//! Answers for scale factors 0.01, 0.1 and 1 are compiled in (from
//! `benches/tpch/answers/`); other directories in the same format can be
//! loaded. Format: a header line of column names, `|` between fields, an empty
//! field for NULL.
//!
//! Tolerances follow TPC-H: counts, keys and text must match exactly; decimal
//! values printed with up to four decimals (money and its products) within
//! 0.01; values printed with more decimals (averages, ratios) within 1%.

use std::path::Path;

use super::QUERY_COUNT;

const SF_0_01: [&str; QUERY_COUNT] = [
    include_str!("../../tpch/answers/sf0.01/q01.csv"),
    include_str!("../../tpch/answers/sf0.01/q02.csv"),
    include_str!("../../tpch/answers/sf0.01/q03.csv"),
    include_str!("../../tpch/answers/sf0.01/q04.csv"),
    include_str!("../../tpch/answers/sf0.01/q05.csv"),
    include_str!("../../tpch/answers/sf0.01/q06.csv"),
    include_str!("../../tpch/answers/sf0.01/q07.csv"),
    include_str!("../../tpch/answers/sf0.01/q08.csv"),
    include_str!("../../tpch/answers/sf0.01/q09.csv"),
    include_str!("../../tpch/answers/sf0.01/q10.csv"),
    include_str!("../../tpch/answers/sf0.01/q11.csv"),
    include_str!("../../tpch/answers/sf0.01/q12.csv"),
    include_str!("../../tpch/answers/sf0.01/q13.csv"),
    include_str!("../../tpch/answers/sf0.01/q14.csv"),
    include_str!("../../tpch/answers/sf0.01/q15.csv"),
    include_str!("../../tpch/answers/sf0.01/q16.csv"),
    include_str!("../../tpch/answers/sf0.01/q17.csv"),
    include_str!("../../tpch/answers/sf0.01/q18.csv"),
    include_str!("../../tpch/answers/sf0.01/q19.csv"),
    include_str!("../../tpch/answers/sf0.01/q20.csv"),
    include_str!("../../tpch/answers/sf0.01/q21.csv"),
    include_str!("../../tpch/answers/sf0.01/q22.csv"),
];

const SF_0_1: [&str; QUERY_COUNT] = [
    include_str!("../../tpch/answers/sf0.1/q01.csv"),
    include_str!("../../tpch/answers/sf0.1/q02.csv"),
    include_str!("../../tpch/answers/sf0.1/q03.csv"),
    include_str!("../../tpch/answers/sf0.1/q04.csv"),
    include_str!("../../tpch/answers/sf0.1/q05.csv"),
    include_str!("../../tpch/answers/sf0.1/q06.csv"),
    include_str!("../../tpch/answers/sf0.1/q07.csv"),
    include_str!("../../tpch/answers/sf0.1/q08.csv"),
    include_str!("../../tpch/answers/sf0.1/q09.csv"),
    include_str!("../../tpch/answers/sf0.1/q10.csv"),
    include_str!("../../tpch/answers/sf0.1/q11.csv"),
    include_str!("../../tpch/answers/sf0.1/q12.csv"),
    include_str!("../../tpch/answers/sf0.1/q13.csv"),
    include_str!("../../tpch/answers/sf0.1/q14.csv"),
    include_str!("../../tpch/answers/sf0.1/q15.csv"),
    include_str!("../../tpch/answers/sf0.1/q16.csv"),
    include_str!("../../tpch/answers/sf0.1/q17.csv"),
    include_str!("../../tpch/answers/sf0.1/q18.csv"),
    include_str!("../../tpch/answers/sf0.1/q19.csv"),
    include_str!("../../tpch/answers/sf0.1/q20.csv"),
    include_str!("../../tpch/answers/sf0.1/q21.csv"),
    include_str!("../../tpch/answers/sf0.1/q22.csv"),
];

const SF_1: [&str; QUERY_COUNT] = [
    include_str!("../../tpch/answers/sf1/q01.csv"),
    include_str!("../../tpch/answers/sf1/q02.csv"),
    include_str!("../../tpch/answers/sf1/q03.csv"),
    include_str!("../../tpch/answers/sf1/q04.csv"),
    include_str!("../../tpch/answers/sf1/q05.csv"),
    include_str!("../../tpch/answers/sf1/q06.csv"),
    include_str!("../../tpch/answers/sf1/q07.csv"),
    include_str!("../../tpch/answers/sf1/q08.csv"),
    include_str!("../../tpch/answers/sf1/q09.csv"),
    include_str!("../../tpch/answers/sf1/q10.csv"),
    include_str!("../../tpch/answers/sf1/q11.csv"),
    include_str!("../../tpch/answers/sf1/q12.csv"),
    include_str!("../../tpch/answers/sf1/q13.csv"),
    include_str!("../../tpch/answers/sf1/q14.csv"),
    include_str!("../../tpch/answers/sf1/q15.csv"),
    include_str!("../../tpch/answers/sf1/q16.csv"),
    include_str!("../../tpch/answers/sf1/q17.csv"),
    include_str!("../../tpch/answers/sf1/q18.csv"),
    include_str!("../../tpch/answers/sf1/q19.csv"),
    include_str!("../../tpch/answers/sf1/q20.csv"),
    include_str!("../../tpch/answers/sf1/q21.csv"),
    include_str!("../../tpch/answers/sf1/q22.csv"),
];

/// The expected result of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceAnswer {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows in order; `None` is NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

impl ReferenceAnswer {
    /// Parses an answer file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        let header = lines.next().ok_or("empty answer file")?;
        let columns: Vec<String> = header.split('|').map(str::to_string).collect();
        // An empty line is a row: one NULL column (q17's answer at SF 0.01).
        let rows = lines
            .map(|line| {
                let row: Vec<Option<String>> = line
                    .split('|')
                    .map(|field| (!field.is_empty()).then(|| field.to_string()))
                    .collect();
                if row.len() == columns.len() {
                    Ok(row)
                } else {
                    Err(format!(
                        "row with {} fields under {} columns: {line}",
                        row.len(),
                        columns.len()
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { columns, rows })
    }

    /// The compiled-in answer of `query` at scale factor `scale_factor`, if
    /// the repository ships one.
    pub fn builtin(scale_factor: f64, query: usize) -> Option<Self> {
        let answers = if scale_factor == 0.01 {
            &SF_0_01
        } else if scale_factor == 0.1 {
            &SF_0_1
        } else if scale_factor == 1.0 {
            &SF_1
        } else {
            return None;
        };
        let text = answers.get(query.checked_sub(1)?)?;
        Self::parse(text).ok()
    }

    /// Loads `qNN.csv` for `query` from `dir`.
    pub fn load(dir: &Path, query: usize) -> Result<Self, String> {
        let path = dir.join(format!("q{query:02}.csv"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Checks `actual` rows against `expected` with the TPC-H tolerances; the
/// error names the first difference.
pub fn compare(expected: &ReferenceAnswer, actual: &[Vec<Option<String>>]) -> Result<(), String> {
    if actual.len() != expected.rows.len() {
        return Err(format!(
            "{} rows, expected {}",
            actual.len(),
            expected.rows.len()
        ));
    }
    for (index, (want, got)) in expected.rows.iter().zip(actual).enumerate() {
        if want.len() != got.len() {
            return Err(format!(
                "row {}: {} columns, expected {}",
                index + 1,
                got.len(),
                want.len()
            ));
        }
        for (column, (w, g)) in want.iter().zip(got).enumerate() {
            if !value_matches(w.as_deref(), g.as_deref()) {
                return Err(format!(
                    "row {} column {}: got {}, expected {}",
                    index + 1,
                    expected
                        .columns
                        .get(column)
                        .map(String::as_str)
                        .unwrap_or("?"),
                    g.as_deref().unwrap_or("NULL"),
                    w.as_deref().unwrap_or("NULL"),
                ));
            }
        }
    }
    Ok(())
}

/// Whether one value matches its reference within the TPC-H tolerances.
fn value_matches(expected: Option<&str>, actual: Option<&str>) -> bool {
    let (expected, actual) = match (expected, actual) {
        (None, None) => return true,
        (Some(e), Some(a)) => (e.trim(), a.trim()),
        _ => return false,
    };
    if expected == actual {
        return true;
    }
    let (Ok(e), Ok(a)) = (expected.parse::<f64>(), actual.parse::<f64>()) else {
        return false;
    };
    let decimals = expected
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len());
    if decimals == 0 && !expected.contains(['e', 'E']) {
        // Counts and keys: exact, but a whole number may come back as `42.0`.
        return e == a;
    }
    if decimals <= 4 {
        (e - a).abs() <= 0.01 + 1e-9
    } else {
        (e - a).abs() <= 0.01 * e.abs() + 1e-12
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_answer_parses() {
        for scale_factor in [0.01, 0.1, 1.0] {
            for query in 1..=QUERY_COUNT {
                let answer = ReferenceAnswer::builtin(scale_factor, query)
                    .unwrap_or_else(|| panic!("sf {scale_factor} q{query}"));
                assert!(!answer.columns.is_empty());
            }
        }
    }

    #[test]
    fn an_empty_line_is_a_null_row() {
        let answer = ReferenceAnswer::parse("avg_yearly\n\n").unwrap();
        assert_eq!(answer.rows, vec![vec![None]]);
        assert!(ReferenceAnswer::parse("avg_yearly\n")
            .unwrap()
            .rows
            .is_empty());
    }

    #[test]
    fn tolerances() {
        assert!(value_matches(Some("14876"), Some("14876")));
        assert!(!value_matches(Some("14876"), Some("14877")));
        assert!(value_matches(Some("532348211.65"), Some("532348211.65")));
        assert!(!value_matches(Some("532348211.65"), Some("532348211.67")));
        assert!(value_matches(
            Some("505822441.4861"),
            Some("505822441.486100")
        ));
        assert!(value_matches(Some("25.575154611454693"), Some("25.575155")));
        assert!(!value_matches(Some("25.575154611454693"), Some("26.0")));
        assert!(value_matches(Some("1995"), Some("1995.0")));
        assert!(!value_matches(Some("FRANCE"), Some("GERMANY")));
        assert!(value_matches(None, None));
        assert!(!value_matches(Some("1"), None));
    }
}
