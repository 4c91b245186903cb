//! Answers Ballista's partition fetches (another executor's shuffle reader,
//! the frontend's result fetch) from [`ShuffleMemory`]: the same requests
//! Ballista's Flight service answers from files, in the same encodings.

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use ballista_core::serde::decode_protobuf;
use ballista_core::serde::scheduler::{Action, ShuffleFileKind};
use datafusion::arrow::ipc::writer::StreamWriter;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tonic::Status;

use super::reader::held_batches;
use super::{HeldOutput, OutputKey, ShuffleMemory};

/// The held output a Ballista fetch request (`IO_BLOCK_TRANSPORT` action
/// body or `do_get` ticket) to executor `executor_id` names, if it is held.
/// Byte-range and index requests are for Ballista's range shuffle files.
pub fn requested_output(
    request: &[u8],
    executor_id: &str,
    memory: &ShuffleMemory,
) -> Option<Arc<HeldOutput>> {
    let Ok(Action::FetchPartition {
        job_id,
        stage_id,
        partition_id,
        file_id,
        file_kind,
        byte_ranges,
        ..
    }) = decode_protobuf(request)
    else {
        return None;
    };
    if file_kind != ShuffleFileKind::Data || !byte_ranges.is_empty() {
        return None;
    }
    memory.get(&OutputKey {
        executor_id: executor_id.to_string(),
        job_id: job_id.as_str().to_string(),
        stage_id,
        partition: partition_id,
        file_id,
    })
}

/// `output` as an Arrow IPC stream in blocks, the answer to
/// `IO_BLOCK_TRANSPORT`: the schema, then one block per batch. Uncompressed:
/// encoding costs the producer's CPU, and shuffles between executors of one
/// machine or rack are CPU-bound, not network-bound.
pub fn ipc_blocks(
    output: Arc<HeldOutput>,
) -> BoxStream<'static, Result<arrow_flight::Result, Status>> {
    let batches = held_batches(output);
    let writer = match StreamWriter::try_new(Vec::new(), &batches.schema()) {
        Ok(writer) => writer,
        Err(e) => return stream::once(async move { Err(internal(e)) }).boxed(),
    };
    let state = (Some(writer), batches);
    stream::unfold(state, |(writer, mut batches)| async move {
        let mut writer = writer?;
        let header = std::mem::take(writer.get_mut());
        if !header.is_empty() {
            return Some((Ok(block(header)), (Some(writer), batches)));
        }
        match batches.next().await {
            Some(Ok(batch)) => {
                let written = writer
                    .write(&batch)
                    .map(|()| block(std::mem::take(writer.get_mut())))
                    .map_err(internal);
                Some((written, (Some(writer), batches)))
            }
            Some(Err(e)) => Some((Err(internal(e)), (None, batches))),
            None => {
                let end = writer.into_inner().map(block).map_err(internal);
                Some((end, (None, batches)))
            }
        }
    })
    .boxed()
}

/// `output` as Flight data, the answer to `do_get`.
pub fn flight_data(output: Arc<HeldOutput>) -> BoxStream<'static, Result<FlightData, Status>> {
    let batches = held_batches(output);
    let schema = batches.schema();
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches.map_err(|e| FlightError::ExternalError(Box::new(e))))
        .map_err(|e| Status::internal(e.to_string()))
        .boxed()
}

fn block(bytes: Vec<u8>) -> arrow_flight::Result {
    arrow_flight::Result { body: bytes.into() }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("serving a held shuffle partition: {e}"))
}
