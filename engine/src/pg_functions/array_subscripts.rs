//! `array_subscripts(array, dimension)`: the subscripts of a one-dimensional
//! array as a list (`[1, 2, …, cardinality]` for dimension 1, NULL for any
//! other or a NULL array). `generate_subscripts(array, dimension)` is
//! rewritten into `unnest(array_subscripts(array, dimension))`
//! ([`crate::pg_rewrite`]), PostgreSQL's set-returning function.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Builder, ListBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// The function's name.
pub const ARRAY_SUBSCRIPTS: &str = "array_subscripts";

/// See the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ArraySubscripts {
    signature: Signature,
}

impl ArraySubscripts {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl Default for ArraySubscripts {
    fn default() -> Self {
        Self::new()
    }
}

fn list_of_int64() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
}

impl ScalarUDFImpl for ArraySubscripts {
    fn name(&self) -> &str {
        ARRAY_SUBSCRIPTS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(list_of_int64())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let dimensions = cast(&arrays[1], &DataType::Int64)?;
        let dimensions = dimensions.as_primitive::<Int64Type>();
        let lengths: Vec<Option<usize>> = match arrays[0].data_type() {
            DataType::List(_) => lengths(arrays[0].as_list::<i32>()),
            DataType::LargeList(_) => lengths(arrays[0].as_list::<i64>()),
            DataType::Null => vec![None; arrays[0].len()],
            other => return exec_err!("{ARRAY_SUBSCRIPTS} needs an array, not {other}"),
        };
        let mut builder = ListBuilder::new(Int64Builder::new());
        for (row, length) in lengths.into_iter().enumerate() {
            let first = dimensions.is_valid(row) && dimensions.value(row) == 1;
            match length {
                Some(length) if first => {
                    builder.values().extend((1..=length as i64).map(Some));
                    builder.append(true);
                }
                _ => builder.append_null(),
            }
        }
        let subscripts: ArrayRef = Arc::new(builder.finish());
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&subscripts, 0)?)
        } else {
            ColumnarValue::Array(subscripts)
        })
    }
}

/// The length of each list of `lists`; `None` for a NULL one.
fn lengths<O: datafusion::arrow::array::OffsetSizeTrait>(
    lists: &datafusion::arrow::array::GenericListArray<O>,
) -> Vec<Option<usize>> {
    (0..lists.len())
        .map(|row| {
            lists
                .is_valid(row)
                .then(|| lists.value_length(row).as_usize())
        })
        .collect()
}
