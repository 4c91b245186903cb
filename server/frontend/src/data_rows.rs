//! Result rows as `DataRow` messages, encoded a batch and a column at a time.
//!
//! [`encode_batch`] encodes each column of a batch with a typed loop
//! ([`pg_text`], [`pg_binary`]) into one buffer, then lays the rows out in
//! one allocation and hands out each row's `DataRow` as a slice of it.
//! Columns without a typed loop, and text settings the loops do not follow
//! (a `DateStyle` other than ISO, `extra_float_digits` below 1), are
//! encoded value by value by `arrow_pg`, as before. The typed loops give
//! `arrow_pg`'s bytes except where PostgreSQL writes otherwise: `15` for a
//! double (not `15.0`), `Infinity` (not `inf`), timestamps without a zero
//! fraction, a one-byte integer as the `int2` it is announced as, and a
//! binary `numeric` zero with its scale.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use futures::{stream, Stream, StreamExt};
use sluice_engine::sqlstate::SqlState;

use super::encoded_column::EncodedColumn;
use super::sqlstate::user_error;
use super::{pg_binary, pg_text};

/// The rows of `batches` as `DataRow` messages for a result described by
/// `fields`, a batch at a time; `keep` lives until the rows end or are
/// dropped.
pub fn row_stream<K: Send + 'static>(
    fields: Arc<Vec<FieldInfo>>,
    batches: SendableRecordBatchStream,
    keep: K,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches
        .map(move |batch| {
            let _keep = &keep;
            let rows = batch
                .map_err(|e| PgWireError::ApiError(Box::new(e)))
                .and_then(|batch| encode_batch(&fields, &batch));
            match rows {
                Ok(rows) => stream::iter(rows.into_iter().map(Ok)).left_stream(),
                Err(e) => stream::once(async move { Err(e) }).right_stream(),
            }
        })
        .flatten()
}

/// The rows of `batch` as `DataRow` messages for a result described by
/// `fields` (one per column, in order).
pub fn encode_batch(fields: &[FieldInfo], batch: &RecordBatch) -> PgWireResult<Vec<DataRow>> {
    let field_count = field_count(batch)?;
    let tuples = encode_tuples(fields, batch, false)?;
    Ok(tuples
        .into_iter()
        .map(|data| DataRow::new(data, field_count))
        .collect())
}

/// The rows of `batch` as tuples of the wire protocol, each in its own
/// slice of one allocation: every value as its length (-1 for a null) and
/// its bytes, as `fields` asks for it; led by the number of values when
/// `counted` (a binary COPY's tuple; a `DataRow` carries it apart).
pub fn encode_tuples(
    fields: &[FieldInfo],
    batch: &RecordBatch,
    counted: bool,
) -> PgWireResult<Vec<BytesMut>> {
    let schema = batch.schema();
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .zip(fields)
        .map(|((array, field), pg_field)| encode_column(array, field, pg_field))
        .collect::<PgWireResult<Vec<_>>>()?;
    let field_count = field_count(batch)?;
    let rows = batch.num_rows();
    let total = columns
        .iter()
        .map(|column| column.value_bytes() + 4 * rows)
        .sum::<usize>()
        + if counted { 2 * rows } else { 0 };
    let mut buffer = BytesMut::with_capacity(total);
    let mut tuples = Vec::with_capacity(rows);
    for row in 0..rows {
        if counted {
            buffer.put_i16(field_count);
        }
        for column in &columns {
            match column.value(row) {
                None => buffer.put_i32(-1),
                Some(value) => {
                    let length = i32::try_from(value.len()).map_err(|_| too_large("a value"))?;
                    buffer.put_i32(length);
                    buffer.put_slice(value);
                }
            }
        }
        tuples.push(buffer.split());
    }
    Ok(tuples)
}

/// The number of columns of `batch`, as the protocol counts them.
fn field_count(batch: &RecordBatch) -> PgWireResult<i16> {
    i16::try_from(batch.num_columns()).map_err(|_| too_large("a row's columns"))
}

/// The values of `array` (the column `field`) as `pg_field` asks for them.
fn encode_column(
    array: &ArrayRef,
    field: &Field,
    pg_field: &FieldInfo,
) -> PgWireResult<EncodedColumn> {
    let typed = match pg_field.format() {
        FieldFormat::Text if text_loops_apply(array.data_type(), pg_field.format_options()) => {
            pg_text::encode_typed(array)
        }
        FieldFormat::Text => None,
        FieldFormat::Binary => pg_binary::encode_typed(array, field),
    };
    match typed {
        Some(column) => Ok(column),
        None => arrow_pg_column(array, field, pg_field),
    }
}

/// Whether the text loops write `data_type` as the session's settings ask.
fn text_loops_apply(data_type: &DataType, options: &FormatOptions) -> bool {
    match data_type {
        DataType::Float32 | DataType::Float64 => options.extra_float_digits >= 1,
        DataType::Date32 | DataType::Timestamp(_, None) => options
            .date_style
            .trim_start()
            .get(..3)
            .is_some_and(|style| style.eq_ignore_ascii_case("ISO")),
        _ => true,
    }
}

/// The values of `array` encoded one by one by `arrow_pg`.
fn arrow_pg_column(
    array: &ArrayRef,
    field: &Field,
    pg_field: &FieldInfo,
) -> PgWireResult<EncodedColumn> {
    let mut encoder = DataRowEncoder::new(Arc::new(vec![pg_field.clone()]));
    let mut column = EncodedColumn::for_array(array.as_ref(), 8);
    for row in 0..array.len() {
        // arrow_pg writes a null interval as `00:00:00`.
        if array.is_null(row) {
            column.push(None);
            continue;
        }
        encode_value(&mut encoder, array, row, field, pg_field)?;
        let cell = encoder.take_row().data;
        // A cell is its length (-1 for a null), then its bytes.
        let value = (cell.len() >= 4 && cell[..4] != [0xff; 4]).then(|| &cell[4..]);
        column.push(value);
    }
    Ok(column)
}

/// The error for something longer than the protocol can carry.
fn too_large(what: &str) -> PgWireError {
    user_error(
        SqlState::PROGRAM_LIMIT_EXCEEDED,
        format!("{what} is too large to send"),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Date64Array, Decimal128Array, Float32Array,
        Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, IntervalMonthDayNanoArray,
        LargeStringArray, ListArray, NullArray, StringArray, StringViewArray,
        Time64MicrosecondArray, TimestampMicrosecondArray, TimestampMillisecondArray,
        TimestampNanosecondArray, TimestampSecondArray, UInt16Array, UInt32Array, UInt64Array,
        UInt8Array,
    };
    use datafusion::arrow::datatypes::{Int32Type, IntervalMonthDayNano, Schema};
    use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
    use datafusion_postgres::pgwire::api::portal::Format;

    use super::*;

    /// 2024-01-02 03:04:05 in seconds since 1970.
    const SECOND: i64 = 1_704_164_645;

    /// One column of each type Sluice's catalog and queries give results,
    /// with a null in each.
    fn columns() -> Vec<(&'static str, ArrayRef)> {
        vec![
            (
                "bool",
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            ),
            (
                "int1",
                Arc::new(Int8Array::from(vec![Some(-128), None, Some(7)])),
            ),
            (
                "int2",
                Arc::new(Int16Array::from(vec![Some(-32768), None, Some(7)])),
            ),
            (
                "int4",
                Arc::new(Int32Array::from(vec![Some(i32::MIN), None, Some(7)])),
            ),
            (
                "int8",
                Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(7)])),
            ),
            (
                "uint1",
                Arc::new(UInt8Array::from(vec![Some(255), None, Some(7)])),
            ),
            (
                "uint2",
                Arc::new(UInt16Array::from(vec![Some(65535), None, Some(7)])),
            ),
            (
                "uint4",
                Arc::new(UInt32Array::from(vec![Some(u32::MAX), None, Some(7)])),
            ),
            (
                "uint8",
                Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(7)])),
            ),
            (
                "float4",
                Arc::new(Float32Array::from(vec![Some(0.5), None, Some(-2.25)])),
            ),
            (
                "float8",
                Arc::new(Float64Array::from(vec![Some(0.1), None, Some(-2.5)])),
            ),
            (
                "numeric",
                Arc::new(
                    Decimal128Array::from(vec![Some(150), None, Some(-5), Some(0)])
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
            ),
            (
                "text",
                Arc::new(StringArray::from(vec![Some("a\tb"), None, Some("")])),
            ),
            (
                "large text",
                Arc::new(LargeStringArray::from(vec![Some("é"), None])),
            ),
            (
                "text view",
                Arc::new(StringViewArray::from(vec![
                    Some("a long enough string"),
                    None,
                ])),
            ),
            (
                "bytea",
                Arc::new(BinaryArray::from(vec![Some(b"\x00\xff".as_slice()), None])),
            ),
            (
                "date",
                Arc::new(Date32Array::from(vec![Some(19_724), None, Some(-719_162)])),
            ),
            (
                "date64",
                Arc::new(Date64Array::from(vec![Some(86_400_000), None])),
            ),
            (
                "time",
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(3_723_000_001),
                    None,
                ])),
            ),
            (
                "timestamp(s)",
                Arc::new(TimestampSecondArray::from(vec![Some(SECOND), None])),
            ),
            (
                "timestamp(us)",
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(SECOND * 1_000_000 + 1),
                    None,
                    Some(-1),
                ])),
            ),
            (
                "timestamptz",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(SECOND * 1_000_000), None])
                        .with_timezone("+00:00"),
                ),
            ),
            (
                "interval",
                Arc::new(IntervalMonthDayNanoArray::from(vec![
                    Some(IntervalMonthDayNano::new(1, 2, 3_000_000_000)),
                    None,
                ])),
            ),
            (
                "int4[]",
                Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                    Some(vec![Some(1), None]),
                    None,
                ])),
            ),
            ("null", Arc::new(NullArray::new(2))),
        ]
    }

    /// The values of some DataRows, row after row (`None` for a null).
    type Cells = Vec<Option<Vec<u8>>>;

    /// Each value of the DataRows of `rows`.
    fn cells(rows: &[DataRow]) -> Cells {
        let mut cells = Vec::new();
        for row in rows {
            let mut data = &row.data[..];
            for _ in 0..row.field_count {
                let length = i32::from_be_bytes(data[..4].try_into().unwrap());
                data = &data[4..];
                if length < 0 {
                    cells.push(None);
                } else {
                    let (value, rest) = data.split_at(length as usize);
                    cells.push(Some(value.to_vec()));
                    data = rest;
                }
            }
            assert!(data.is_empty());
        }
        cells
    }

    /// The DataRows of `array` in `format`: Sluice's, then arrow_pg's.
    fn both(array: &ArrayRef, format: Format) -> (Cells, Cells) {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "c",
            array.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::clone(array)]).unwrap();
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, &format, None).unwrap());
        let ours = encode_batch(&fields, &batch).unwrap();
        let theirs: Vec<DataRow> = encode_recordbatch(fields, batch)
            .collect::<PgWireResult<_>>()
            .unwrap();
        (cells(&ours), cells(&theirs))
    }

    fn texts(cells: &[Option<Vec<u8>>]) -> Vec<Option<String>> {
        let text = |cell: &Vec<u8>| String::from_utf8(cell.clone()).unwrap();
        cells.iter().map(|cell| cell.as_ref().map(text)).collect()
    }

    #[test]
    fn rows_match_arrow_pg_byte_for_byte_in_both_formats() {
        for (name, array) in columns() {
            for format in [Format::UnifiedText, Format::UnifiedBinary] {
                let binary = matches!(format, Format::UnifiedBinary);
                // Where PostgreSQL differs (tested below): arrow_pg sends a
                // one-byte integer as one byte for an int2, and a whole
                // second with a fraction of zeros.
                if (binary && name == "int1") || (!binary && name == "timestamp(s)") {
                    continue;
                }
                let (ours, mut theirs) = both(&array, format);
                if name == "interval" {
                    assert!(theirs[1].is_some(), "arrow_pg's null interval");
                    assert_eq!(ours[1], None);
                    theirs[1] = None;
                }
                // PostgreSQL's numeric_send keeps a zero's scale (0.00);
                // arrow_pg's (rust_decimal's) drops it.
                if binary && name == "numeric" {
                    assert_eq!(theirs[3], Some(vec![0, 0, 0, 0, 0, 0, 0, 0]));
                    assert_eq!(ours[3], Some(vec![0, 0, 0, 0, 0, 0, 0, 2]));
                    theirs[3].clone_from(&ours[3]);
                }
                assert_eq!(ours, theirs, "{name}, binary: {binary}");
            }
        }
    }

    /// Where arrow_pg's text differs from PostgreSQL's, the rows carry
    /// PostgreSQL 15's (`select 15::float8, 'infinity'::float8,
    /// '2024-01-02 03:04:05'::timestamp, …`).
    #[test]
    fn text_follows_postgres_where_arrow_pg_does_not() {
        let doubles: ArrayRef = Arc::new(Float64Array::from(vec![15.0, 1e20, f64::INFINITY]));
        let (ours, theirs) = both(&doubles, Format::UnifiedText);
        assert_eq!(
            texts(&ours),
            [
                Some("15".into()),
                Some("1e+20".into()),
                Some("Infinity".into())
            ]
        );
        assert_eq!(texts(&theirs)[0].as_deref(), Some("15.0"));
        let micros = SECOND * 1_000_000;
        let timestamps: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            micros / 1_000,
            micros / 1_000 + 250,
        ]));
        let (ours, theirs) = both(&timestamps, Format::UnifiedText);
        let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(vec![SECOND]));
        assert_eq!(
            texts(&both(&seconds, Format::UnifiedText).0),
            [Some("2024-01-02 03:04:05".into())]
        );
        assert_eq!(
            texts(&ours),
            [
                Some("2024-01-02 03:04:05".into()),
                Some("2024-01-02 03:04:05.25".into())
            ]
        );
        assert_eq!(
            texts(&theirs)[0].as_deref(),
            Some("2024-01-02 03:04:05.000000")
        );
        let nanos: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
            micros * 1_000 + 1_499,
            micros * 1_000 + 1_500,
        ]));
        let (ours, _) = both(&nanos, Format::UnifiedText);
        assert_eq!(
            texts(&ours),
            [
                Some("2024-01-02 03:04:05.000001".into()),
                Some("2024-01-02 03:04:05.000002".into())
            ]
        );
    }

    /// A one-byte integer is announced as `int2`, so it is sent as two bytes
    /// (arrow_pg sends one, which no client reads).
    #[test]
    fn a_one_byte_integer_is_sent_as_the_int2_it_is_announced_as() {
        let ints: ArrayRef = Arc::new(Int8Array::from(vec![Some(-2), None]));
        let (ours, _) = both(&ints, Format::UnifiedBinary);
        assert_eq!(ours, [Some(vec![0xff, 0xfe]), None]);
    }

    /// Text settings the loops do not follow leave the values to arrow_pg.
    #[test]
    fn other_date_styles_and_float_digits_go_to_arrow_pg() {
        let mut options = FormatOptions::default();
        options.date_style = "SQL, DMY".to_string();
        options.extra_float_digits = 0;
        assert!(!text_loops_apply(&DataType::Date32, &options));
        assert!(!text_loops_apply(&DataType::Float64, &options));
        assert!(text_loops_apply(&DataType::Int64, &options));
        assert!(text_loops_apply(
            &DataType::Date32,
            &FormatOptions::default()
        ));
    }
}
