//! PostgreSQL system functions that drivers, ORMs and BI tools call and that
//! DataFusion and datafusion-pg-catalog do not provide (or provide with
//! answers clients cannot parse, like DataFusion's `version()`).

pub mod array_subscripts;

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
        // Sluice tables have no indexes: the rows of pg_index are
        // PostgreSQL's own catalogs', whose definitions Sluice does not have.
        ("pg_get_indexdef", arities(&[1, 3]), text(None)),
        // Sluice has no sequences, so no column owns one.
        ("pg_get_serial_sequence", arities(&[2]), text(None)),
        // Every function and collation lives in a schema on the search path.
        (
            "pg_collation_is_visible",
            arities(&[1]),
            ScalarValue::Boolean(Some(true)),
        ),
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
    context.register_udf(ScalarUDF::new_from_impl(ToRegtype::new()));
    context.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::new()));
    context.register_udf(ScalarUDF::new_from_impl(When::new()));
    context.register_udf(ScalarUDF::new_from_impl(CurrentSetting::new()));
    context.register_udf(ScalarUDF::new_from_impl(SetConfig::new()));
    context.register_udf(ScalarUDF::new_from_impl(
        array_subscripts::ArraySubscripts::new(),
    ));
}

/// Makes `current_user` and `session_user` (which datafusion-pg-catalog
/// answers with `postgres`) return `user`, the login of the connection whose
/// session `context` is.
pub fn register_session_user(context: &SessionContext, user: &str) {
    context.register_udf(ScalarUDF::new_from_impl(Constant {
        name: "session_user",
        signature: Signature::nullary(Volatility::Stable),
        value: ScalarValue::Utf8(Some(user.to_string())),
    }));
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

/// SQL spellings of built-in type names that `to_regtype` accepts besides
/// PostgreSQL's internal names.
const TYPE_ALIASES: &[(&str, &str)] = &[
    ("smallint", "int2"),
    ("integer", "int4"),
    ("int", "int4"),
    ("bigint", "int8"),
    ("real", "float4"),
    ("double precision", "float8"),
    ("boolean", "bool"),
    ("character varying", "varchar"),
    ("character", "bpchar"),
    ("decimal", "numeric"),
    ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"),
    ("time without time zone", "time"),
    ("time with time zone", "timetz"),
];

/// The oid of PostgreSQL's built-in type called `name`, if there is one.
pub fn builtin_type_oid(name: &str) -> Option<i32> {
    static BY_NAME: std::sync::LazyLock<std::collections::HashMap<String, u32>> =
        std::sync::LazyLock::new(|| {
            // Built-in type oids are below 10000 (FirstGenbkiObjectId).
            (0..10_000)
                .filter_map(postgres_types::Type::from_oid)
                .map(|ty| (ty.name().to_string(), ty.oid()))
                .collect()
        });
    let name = name
        .trim()
        .trim_start_matches("pg_catalog.")
        .to_ascii_lowercase();
    let name = TYPE_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, internal)| internal.to_string())
        .unwrap_or(name);
    BY_NAME.get(&name).map(|&oid| oid as i32)
}

/// `to_regtype(name)`: the oid of a type, NULL for a type that does not exist
/// (psycopg and SQLAlchemy probe for `hstore` and friends with it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToRegtype {
    signature: Signature,
}

impl ToRegtype {
    fn new() -> Self {
        Self {
            signature: Signature::one_of(vec![TypeSignature::String(1)], Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = strings(&arrays[0])?;
        let oids: datafusion::arrow::array::Int32Array = names
            .iter()
            .map(|name| name.and_then(builtin_type_oid))
            .collect();
        let oids: ArrayRef = Arc::new(oids);
        Ok(if matches!(args.args[0], ColumnarValue::Scalar(_)) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&oids, 0)?)
        } else {
            ColumnarValue::Array(oids)
        })
    }
}

/// `json_build_object(key, value, …)`: a JSON object as text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Row `row` of `array` as a JSON value.
fn json_value(array: &ArrayRef, row: usize) -> Result<String> {
    if array.is_null(row) {
        return Ok("null".into());
    }
    let text = strings(&array.slice(row, 1))?.value(0).to_string();
    Ok(match array.data_type() {
        DataType::Boolean => text,
        data_type if data_type.is_numeric() => text,
        _ => json_string(&text),
    })
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(
                "json_build_object: argument list must have even number of elements".into(),
            ));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let scalar = args
            .args
            .iter()
            .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let mut objects = StringBuilder::new();
        for row in 0..rows {
            let mut members = Vec::with_capacity(arrays.len() / 2);
            for pair in arrays.chunks(2) {
                if pair[0].is_null(row) {
                    return Err(DataFusionError::Execution(
                        "json_build_object: null value not allowed for object key".into(),
                    ));
                }
                let key = strings(&pair[0].slice(row, 1))?.value(0).to_string();
                members.push(format!(
                    "{} : {}",
                    json_string(&key),
                    json_value(&pair[1], row)?
                ));
            }
            objects.append_value(format!("{{{}}}", members.join(", ")));
        }
        let objects: ArrayRef = Arc::new(objects.finish());
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&objects, 0)?)
        } else {
            ColumnarValue::Array(objects)
        })
    }
}

/// `sluice_when(condition, value)`: `value` where `condition` is true, else
/// NULL — `CASE WHEN condition THEN value END` as a plain function, which
/// the frontend substitutes where `value` is a correlated subquery (DataFusion
/// decorrelates subqueries in function arguments, not in `CASE` branches).
#[derive(Debug, PartialEq, Eq, Hash)]
struct When {
    signature: Signature,
}

/// The name of [`When`].
pub const WHEN_FUNCTION: &str = "sluice_when";

impl When {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for When {
    fn name(&self) -> &str {
        WHEN_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        Ok(arguments[1].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let conditions = cast(&arrays[0], &DataType::Boolean)?;
        let conditions = conditions
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("cast to Boolean gives a BooleanArray");
        let drop: BooleanArray = conditions
            .iter()
            .map(|condition| Some(condition != Some(true)))
            .collect();
        let values = datafusion::arrow::compute::nullif(&arrays[1], &drop)?;
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&values, 0)?)
        } else {
            ColumnarValue::Array(values)
        })
    }
}
