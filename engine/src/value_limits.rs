//! A cap on the values one function call may build.
//!
//! A few functions build outputs far larger than their inputs: `repeat('x',
//! 2147483647)` asks for 2 GiB from a 1-byte string, `lpad`, `array_repeat`
//! and the scalar `range` likewise, `replace` multiplies. Left alone, one
//! such call allocates until the process dies, and while constant folding
//! it blocks planning for seconds. Each is wrapped here to estimate its
//! output from its arguments before computing it, and to refuse (SQLSTATE
//! `54000`, as PostgreSQL's `repeat` answers "requested length too large")
//! when one call's output, over all the rows of its batch, would exceed
//! [`MAX_VALUE_BYTES`]. Regular expressions longer than [`MAX_PATTERN_BYTES`]
//! are refused the same way before they are compiled, whether given to a
//! `regexp_*` function or to the `~` operators ([`RegexOperatorsCapped`]).
//!
//! The wrapped functions keep their names: registered in the frontend, the
//! scheduler and every executor ([`capped`]), they replace DataFusion's own
//! wherever a plan is built, folded, or run.

use std::sync::Arc;

use crate::sqlstate::{PgError, SqlState};
use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::BinaryExpr;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    lit, ColumnarValue, Documentation, Expr, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature,
};

/// The most bytes one call of an amplifying function may produce for one
/// batch (PostgreSQL allows 1 GB per value; a batch holds many).
pub const MAX_VALUE_BYTES: u64 = 64 * 1024 * 1024;

/// The longest regular expression compiled (a 100,000-way alternation took
/// seconds to compile before failing).
pub const MAX_PATTERN_BYTES: u64 = 32 * 1024;

/// The start of the message of a refused call.
pub const VALUE_TOO_LARGE: &str = "value too large";

/// How an amplifying function's output is estimated from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Estimate {
    /// `repeat(text, count)`: length times count.
    Repeat,
    /// `lpad`/`rpad(text, length [, fill])`: the length asked for.
    Pad,
    /// `array_repeat(element, count)`: count elements.
    ArrayRepeat,
    /// `array_resize(array, size [, value])`: size elements.
    ArrayResize,
    /// `range`/`generate_series(start, stop [, step])` over integers.
    Series,
    /// `replace(text, from, to)`: every `from` becoming `to`.
    Replace,
    /// `regexp_*(text, pattern [, replacement] …)`: the pattern is bounded;
    /// a replacement may follow every character.
    Regex,
}

/// The functions that are capped, and how.
const CAPPED: &[(&str, Estimate)] = &[
    ("repeat", Estimate::Repeat),
    ("lpad", Estimate::Pad),
    ("rpad", Estimate::Pad),
    ("array_repeat", Estimate::ArrayRepeat),
    ("array_resize", Estimate::ArrayResize),
    ("range", Estimate::Series),
    ("generate_series", Estimate::Series),
    ("replace", Estimate::Replace),
    ("regexp_replace", Estimate::Regex),
    ("regexp_like", Estimate::Regex),
    ("regexp_match", Estimate::Regex),
    ("regexp_count", Estimate::Regex),
    ("regexp_instr", Estimate::Regex),
    ("regexp_substr", Estimate::Regex),
];

/// `function` with its output capped, when it is one that can amplify its
/// input; `None` otherwise.
pub fn capped(function: &Arc<ScalarUDF>) -> Option<Arc<ScalarUDF>> {
    if function.inner().is::<Capped>() {
        return None;
    }
    let (_, estimate) = CAPPED.iter().find(|(name, _)| *name == function.name())?;
    Some(Arc::new(ScalarUDF::new_from_impl(Capped {
        inner: Arc::clone(function),
        estimate: *estimate,
    })))
}

/// `functions` with every amplifying one capped.
pub fn cap_all(functions: impl IntoIterator<Item = Arc<ScalarUDF>>) -> Vec<Arc<ScalarUDF>> {
    functions
        .into_iter()
        .map(|function| capped(&function).unwrap_or(function))
        .collect()
}

/// `~`, `~*`, `!~` and `!~*` as calls of the capped `regexp_like`
/// (`NOT` around it for the negated ones), so their patterns are bounded as
/// the functions' are: the Arrow kernels behind the operators compile any
/// pattern, and a 100,000-way alternation took seconds before failing with
/// `XX000`. Column names stay the operators' (DataFusion's analyzer keeps
/// the name of a rewritten expression).
#[derive(Debug)]
pub struct RegexOperatorsCapped {
    /// The capped `regexp_like` of the session.
    regexp_like: Arc<ScalarUDF>,
}

impl RegexOperatorsCapped {
    /// The rewrite calling `regexp_like`, which must be the capped one
    /// ([`capped`]).
    pub fn new(regexp_like: Arc<ScalarUDF>) -> Self {
        Self { regexp_like }
    }
}

impl FunctionRewrite for RegexOperatorsCapped {
    fn name(&self) -> &str {
        "regex_operators_capped"
    }

    fn rewrite(
        &self,
        expr: Expr,
        _schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> Result<Transformed<Expr>> {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
            return Ok(Transformed::no(expr));
        };
        let (negated, flags) = match op {
            Operator::RegexMatch => (false, None),
            Operator::RegexIMatch => (false, Some("i")),
            Operator::RegexNotMatch => (true, None),
            Operator::RegexNotIMatch => (true, Some("i")),
            _ => {
                return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right,
                })))
            }
        };
        let mut args = vec![*left, *right];
        args.extend(flags.map(lit));
        let matches = self.regexp_like.call(args);
        Ok(Transformed::yes(if negated { !matches } else { matches }))
    }
}

/// A function whose calls are refused when their output would be too large.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Capped {
    inner: Arc<ScalarUDF>,
    estimate: Estimate,
}

/// One argument's values as integers (`None` for nulls and other types).
fn integers(value: &ColumnarValue, rows: usize) -> Option<Vec<Option<i64>>> {
    let array = value.to_array(rows.max(1)).ok()?;
    if !array.data_type().is_integer() {
        return None;
    }
    let array = cast(&array, &DataType::Int64).ok()?;
    let array = array.as_any().downcast_ref::<Int64Array>()?;
    Some(array.iter().collect())
}

/// One argument's values' lengths in bytes (strings and binaries), or 8
/// bytes a value for anything else.
fn byte_lengths(value: &ColumnarValue, rows: usize) -> Vec<u64> {
    let Ok(array) = value.to_array(rows.max(1)) else {
        return vec![8; rows.max(1)];
    };
    let lengths: Option<ArrayRef> = match array.data_type() {
        DataType::Utf8View | DataType::BinaryView => cast(&array, &DataType::Utf8)
            .ok()
            .and_then(|a| length(&a).ok()),
        _ => length(&array).ok(),
    };
    match lengths.and_then(|l| cast(&l, &DataType::Int64).ok()) {
        Some(lengths) => lengths
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|l| l.iter().map(|v| v.unwrap_or(0).max(0) as u64).collect())
            .unwrap_or_else(|| vec![8; array.len()]),
        None => vec![8; array.len()],
    }
}

/// Row `row` of per-row values that may hold just one (a scalar argument).
fn at<T: Copy + Default>(values: &[T], row: usize) -> T {
    match values.len() {
        0 => T::default(),
        1 => values[0],
        _ => values.get(row).copied().unwrap_or_default(),
    }
}

impl Capped {
    /// The bytes this call would produce, summed over its rows (saturating).
    fn output_bytes(&self, args: &[ColumnarValue], rows: usize) -> u64 {
        let rows = rows.max(1);
        let count = |i: usize| args.get(i).and_then(|a| integers(a, rows));
        let bytes = |i: usize| {
            args.get(i)
                .map(|a| byte_lengths(a, rows))
                .unwrap_or_default()
        };
        let sum = |per_row: &dyn Fn(usize) -> u64| {
            (0..rows).fold(0u64, |total, row| total.saturating_add(per_row(row)))
        };
        let positive = |values: &Option<Vec<Option<i64>>>, row: usize| -> u64 {
            values
                .as_deref()
                .map_or(0, |v| at(v, row).unwrap_or(0).max(0) as u64)
        };
        match self.estimate {
            Estimate::Repeat => {
                let (text, times) = (bytes(0), count(1));
                sum(&|row| at(&text, row).saturating_mul(positive(&times, row)))
            }
            Estimate::Pad => {
                let (length, fill) = (count(1), bytes(2));
                // Characters of up to four bytes.
                let width = if fill.iter().any(|&b| b > 1) { 4 } else { 1 };
                sum(&|row| positive(&length, row).saturating_mul(width))
            }
            Estimate::ArrayRepeat => {
                let (element, times) = (bytes(0), count(1));
                sum(&|row| {
                    at(&element, row)
                        .max(8)
                        .saturating_mul(positive(&times, row))
                })
            }
            Estimate::ArrayResize => {
                let size = count(1);
                sum(&|row| positive(&size, row).saturating_mul(8))
            }
            Estimate::Series => {
                let (start, stop, step) = (count(0), count(1), count(2));
                let (Some(start), Some(stop)) = (start, stop) else {
                    return 0;
                };
                sum(&|row| {
                    let (Some(a), Some(b)) = (at(&start, row), at(&stop, row)) else {
                        return 0;
                    };
                    let step = step
                        .as_deref()
                        .and_then(|s| at(s, row))
                        .unwrap_or(1)
                        .unsigned_abs()
                        .max(1);
                    (a.abs_diff(b) / step).saturating_add(1).saturating_mul(8)
                })
            }
            Estimate::Replace => {
                let (text, from, to) = (bytes(0), bytes(1), bytes(2));
                sum(&|row| {
                    let (text, from, to) = (at(&text, row), at(&from, row), at(&to, row));
                    if to <= from {
                        return text;
                    }
                    (text / from.max(1) + 1)
                        .saturating_mul(to)
                        .saturating_add(text)
                })
            }
            Estimate::Regex => {
                let (text, replacement) = (bytes(0), bytes(2));
                sum(&|row| {
                    let text = at(&text, row);
                    if self.inner.name() == "regexp_replace" {
                        (text + 1).saturating_mul(at(&replacement, row) + 1)
                    } else {
                        text
                    }
                })
            }
        }
    }

    /// `Err` when a pattern argument is longer than [`MAX_PATTERN_BYTES`].
    fn check_pattern(&self, args: &[ColumnarValue], rows: usize) -> Result<()> {
        if self.estimate != Estimate::Regex {
            return Ok(());
        }
        let Some(pattern) = args.get(1) else {
            return Ok(());
        };
        let longest = byte_lengths(pattern, rows).into_iter().max().unwrap_or(0);
        if longest > MAX_PATTERN_BYTES {
            return Err(PgError::new(
                SqlState::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "{VALUE_TOO_LARGE}: {}() was given a regular expression of {longest} bytes, \
                 and this server compiles at most {MAX_PATTERN_BYTES}",
                    self.inner.name()
                ),
            )
            .into_datafusion());
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check_pattern(&args.args, args.number_rows)?;
        let bytes = self.output_bytes(&args.args, args.number_rows);
        if bytes > MAX_VALUE_BYTES {
            return Err(PgError::new(
                SqlState::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "{VALUE_TOO_LARGE}: {}() would build {bytes} bytes, and one call may build \
                 at most {MAX_VALUE_BYTES}",
                    self.inner.name()
                ),
            )
            .into_datafusion());
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn run(sql: &str) -> Result<()> {
        let context = SessionContext::new();
        let capped: Vec<_> = context
            .state()
            .scalar_functions()
            .values()
            .filter_map(capped)
            .collect();
        for function in capped {
            context.register_udf(function.as_ref().clone());
        }
        context.sql(sql).await?.collect().await.map(|_| ())
    }

    #[tokio::test]
    async fn amplifying_calls_are_refused_before_they_allocate() {
        for sql in [
            "SELECT length(repeat('x', 2147483647))",
            "SELECT length(repeat('xy', 40000000))",
            "SELECT lpad('x', 2147483647)",
            "SELECT rpad('x', 100000000, 'é')",
            "SELECT array_repeat('abc', 100000000)",
            "SELECT range(0, 10000000000)",
            "SELECT replace(repeat('a', 10000000), 'a', repeat('b', 100))",
            "SELECT regexp_replace(repeat('a', 10000000), '', repeat('b', 100), 'g')",
            "SELECT length(repeat('x', i)) FROM (VALUES (1), (70000000)) AS t(i)",
        ] {
            let error = run(sql).await.unwrap_err().to_string();
            assert!(error.contains(VALUE_TOO_LARGE), "{sql}: {error}");
        }
        let pattern = (0..10000).map(|i| format!("a{i}")).collect::<Vec<_>>();
        let error = run(&format!(
            "SELECT regexp_like('a1', '{}')",
            pattern.join("|")
        ))
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains(VALUE_TOO_LARGE), "{error}");
        for sql in [
            "SELECT repeat('x', 1000000)",
            "SELECT lpad('x', 10), rpad('x', 10, 'é'), array_repeat(1, 3), range(0, 10)",
            "SELECT replace('abc', 'b', 'xyz'), regexp_replace('abc', 'b', 'x')",
        ] {
            run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}
