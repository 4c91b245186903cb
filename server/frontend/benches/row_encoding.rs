//! Rows per second of the result encoders alone: TPC-H `lineitem` batches
//! (generated in memory by tpchgen, 8,192 rows each, the types a Parquet
//! scan of it gives) encoded as `DataRow` messages in the text and binary
//! formats by Sluice's column-at-a-time encoder and by arrow_pg's
//! value-at-a-time one.
//!
//!   cargo bench -p sluice-server --bench row_encoding            # SF 0.1
//!   SF=1 cargo bench -p sluice-server --bench row_encoding

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::FieldInfo;
use sluice_frontend::data_rows::encode_batch;
use tpchgen::generators::LineItemGenerator;
use tpchgen_arrow::LineItemArrow;

/// `lineitem` at `sf`, its strings as the string views a Parquet scan gives.
fn lineitem(sf: f64) -> Vec<RecordBatch> {
    LineItemArrow::new(LineItemGenerator::new(sf, 1, 1))
        .with_batch_size(8_192)
        .map(|batch| {
            let fields: Vec<Field> = batch
                .schema()
                .fields()
                .iter()
                .map(|field| match field.data_type() {
                    DataType::Utf8 => Field::new(field.name(), DataType::Utf8View, true),
                    other => Field::new(field.name(), other.clone(), true),
                })
                .collect();
            let columns = batch
                .columns()
                .iter()
                .zip(&fields)
                .map(|(column, field)| cast(column, field.data_type()).expect("casts"))
                .collect();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("a batch")
        })
        .collect()
}

/// The best of three passes of `encode` over `batches`: rows per second
/// and the bytes it made.
fn measure(batches: &[RecordBatch], encode: impl Fn(&RecordBatch) -> usize) -> (f64, usize) {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut best = Duration::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
        let start = Instant::now();
        bytes = batches.iter().map(&encode).sum();
        best = best.min(start.elapsed());
    }
    (rows as f64 / best.as_secs_f64(), bytes)
}

fn main() {
    let sf: f64 = std::env::var("SF")
        .ok()
        .and_then(|sf| sf.parse().ok())
        .unwrap_or(0.1);
    let batches = lineitem(sf);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    println!(
        "lineitem SF {sf}: {rows} rows, {} columns",
        batches[0].num_columns()
    );
    println!(
        "{:<8} {:>16} {:>16} {:>8}",
        "format", "Sluice rows/s", "arrow_pg rows/s", "ratio"
    );
    for (name, format) in [
        ("text", Format::UnifiedText),
        ("binary", Format::UnifiedBinary),
    ] {
        let fields: Arc<Vec<FieldInfo>> = Arc::new(
            arrow_schema_to_pg_fields(&batches[0].schema(), &format, None).expect("fields"),
        );
        let (ours, our_bytes) = measure(&batches, |batch| {
            let rows = encode_batch(&fields, batch).expect("encodes");
            rows.iter().map(|row| row.data.len()).sum()
        });
        let (theirs, their_bytes) = measure(&batches, |batch| {
            encode_recordbatch(Arc::clone(&fields), batch.clone())
                .map(|row| row.expect("encodes").data.len())
                .sum()
        });
        println!(
            "{name:<8} {ours:>16.0} {theirs:>16.0} {:>7.1}x   ({our_bytes} and {their_bytes} bytes)",
            ours / theirs
        );
    }
}
