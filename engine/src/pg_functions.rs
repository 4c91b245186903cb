//! PostgreSQL system functions that drivers, ORMs and BI tools call and that
//! DataFusion and datafusion-pg-catalog do not provide (or provide with
//! answers clients cannot parse, like DataFusion's `version()`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use crate::pg_settings::{PgSettings, PG_VERSION};
use crate::storage::displayed_value;

/// What `version()` returns: PostgreSQL's format, so that ORMs which parse it
/// (SQLAlchemy, pgjdbc, Metabase) find a version they support.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_VERSION} (Sluice {}) on {}-{}, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

/// Registers the functions on `context` (replacing DataFusion's `version`).
pub fn register(context: &SessionContext) {
    let text = |value: Option<String>| ScalarValue::Utf8(value);
    // The answers do not depend on the arguments: any types are accepted
    // (clients pass oids as int, bigint or text).
    let arities = |counts: &[usize]| {
        Signature::one_of(
            counts
                .iter()
                .map(|&count| match count {
                    0 => TypeSignature::Nullary,
                    count => TypeSignature::Any(count),
                })
                .collect(),
            Volatility::Stable,
        )
    };
    let constants = [
        ("version", arities(&[0]), text(Some(version_string()))),
        // Sluice keeps no comments on objects: every description is NULL.
        ("col_description", arities(&[2]), text(None)),
        ("obj_description", arities(&[1, 2]), text(None)),
        ("shobj_description", arities(&[2]), text(None)),
        // pg_proc lists only PostgreSQL's built-in functions, in pg_catalog:
        // Sluice has no user-defined SQL functions to describe.
        ("pg_get_function_result", arities(&[1]), text(None)),
        ("pg_get_function_arguments", arities(&[1]), text(None)),
        // Every function lives in a schema on the search path.
        (
            "pg_function_is_visible",
            arities(&[1]),
            ScalarValue::Boolean(Some(true)),
        ),
    ];
    for (name, signature, value) in constants {
        context.register_udf(ScalarUDF::new_from_impl(Constant {
            name,
            signature,
            value,
        }));
    }
    context.register_udf(ScalarUDF::new_from_impl(CurrentSetting::new()));
    context.register_udf(ScalarUDF::new_from_impl(SetConfig::new()));
}

/// A function that returns one value whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    signature: Signature,
    value: ScalarValue,
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// The value `current_setting(name)` shows: a PostgreSQL parameter, or any
/// engine setting by its full name (secrets masked); `None` if unknown.
pub fn setting_value(config: &ConfigOptions, name: &str) -> Option<String> {
    if let Some(value) = config
        .extensions
        .get::<PgSettings>()
        .and_then(|settings| settings.get(name))
    {
        return Some(value.to_string());
    }
    let name = name.to_ascii_lowercase();
    config
        .entries()
        .into_iter()
        .find(|entry| entry.key == name)
        .map(|entry| displayed_value(&entry.key, entry.value.as_deref().unwrap_or("")).to_string())
}

/// `current_setting(name [, missing_ok])`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn new() -> Self {
        Self {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
                ],
                Volatility::Stable,
            ),
        }
    }
}

/// `array` as UTF-8 strings.
fn strings(array: &ArrayRef) -> Result<StringArray> {
    let array = cast(array, &DataType::Utf8)?;
    Ok(array
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8 gives a StringArray")
        .clone())
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = strings(&arrays[0])?;
        let missing_ok = match arrays.get(1) {
            Some(array) => Some(
                array
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Internal("missing_ok is not boolean".into()))?
                    .clone(),
            ),
            None => None,
        };
        let mut values = StringBuilder::with_capacity(names.len(), 16 * names.len());
        for row in 0..names.len() {
            if names.is_null(row) {
                values.append_null();
                continue;
            }
            let name = names.value(row);
            match setting_value(&args.config_options, name) {
                Some(value) => values.append_value(value),
                None if missing_ok.as_ref().is_some_and(|ok| ok.value(row)) => values.append_null(),
                None => {
                    return Err(DataFusionError::Configuration(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )))
                }
            }
        }
        let values: ArrayRef = Arc::new(values.finish());
        Ok(
            if args
                .args
                .iter()
                .all(|arg| matches!(arg, ColumnarValue::Scalar(_)))
            {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&values, 0)?)
            } else {
                ColumnarValue::Array(values)
            },
        )
    }
}

/// `set_config(name, value, is_local)`: returns `value`. The change itself is
/// made by the frontend before the statement is planned (a function cannot
/// change its session), see the frontend's settings hook.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SetConfig {
    signature: Signature,
}

impl SetConfig {
    fn new() -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
                Volatility::Volatile,
            ),
        }
    }
}

impl ScalarUDFImpl for SetConfig {
    fn name(&self) -> &str {
        "set_config"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(args.args[1].clone())
    }
}
