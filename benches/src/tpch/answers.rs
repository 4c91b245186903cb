//! TPC-H reference answers and the comparison of results against them.
//!
//! The repository ships answers for scale factors 0.01, 0.1 and 1 in
//! `benches/tpch/answers/sf<SF>/` ([`shipped_dir`]); they are read from
//! there, not compiled into the `sluice` binary, and other directories in
//! the same format can be given. Format: a header line of column names, `|` between fields, an empty
//! field for NULL.
//!
//! Tolerances follow TPC-H: counts, keys and text must match exactly; decimal
//! values printed with up to four decimals (money and its products) within
//! 0.01; values printed with more decimals (averages, ratios) within 1%.

use std::path::{Path, PathBuf};

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

    /// Loads `qNN.csv` for `query` from `dir`.
    pub fn load(dir: &Path, query: usize) -> Result<Self, String> {
        let path = dir.join(format!("q{query:02}.csv"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The directory of the answers the repository ships for `scale_factor`,
/// `benches/tpch/answers/sf<SF>` under `root` (a checkout), if it is there.
pub fn shipped_dir(root: &Path, scale_factor: f64) -> Option<PathBuf> {
    let dir = root
        .join("benches/tpch/answers")
        .join(format!("sf{scale_factor}"));
    dir.is_dir().then_some(dir)
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
    use crate::tpch::QUERY_COUNT;

    #[test]
    fn every_shipped_answer_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for scale_factor in [0.01, 0.1, 1.0] {
            let dir = shipped_dir(&root, scale_factor)
                .unwrap_or_else(|| panic!("no answers for sf {scale_factor}"));
            for query in 1..=QUERY_COUNT {
                let answer = ReferenceAnswer::load(&dir, query)
                    .unwrap_or_else(|e| panic!("sf {scale_factor} q{query}: {e}"));
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
