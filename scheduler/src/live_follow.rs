//! A job's result rows, from executors in other processes to the frontend,
//! while the job runs.
//!
//! In one process (`sluice serve`) a final-stage task hands its batches to
//! the frontend through [`sluice_engine::live_results`]. A frontend started
//! with `--scheduler` follows each result on every executor instead, over
//! the executors' Flight ports it already fetches results from:
//!
//! - Before submitting a job, the frontend asks each executor for result
//!   key `key` ([`LIVE_RESULT_ACTION`]). The executor registers a reader of
//!   the result, so the job's final-stage tasks there hand their batches
//!   over as they make them (queued, then spilled: the task never waits),
//!   and answers with a stream of what the reader finds: batches and ends
//!   of partitions, tagged with the partition and its attempt.
//! - The frontend writes what each stream brings into its own result
//!   ([`sluice_engine::live_results::LiveJob`]), whose reader the client's
//!   query reads, with the same rules as in one process.
//! - When the job has ended, the frontend asks each executor for a sync
//!   ([`LIVE_RESULT_SYNC_ACTION`]) and waits for its stream to report it:
//!   then everything its tasks handed over has arrived. A stream that broke
//!   means rows were lost on the way: the job counts as having lost work
//!   ([`sluice_engine::recovery`]).
//!
//! An executor the frontend did not reach (or one that joined later) keeps
//! its tasks' output for Ballista's result fetch at the job's end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::error::{DataFusionError, Result};
use futures::stream::{self, BoxStream, StreamExt};
use sluice_engine::live_results::{self, LiveItem, LiveJob, LiveReader, LiveWriter};
use sluice_engine::recovery::ResultFollower;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Status;

/// The Flight action an executor answers with the stream of result `key`
/// (the action's body) as its tasks hand it over.
pub const LIVE_RESULT_ACTION: &str = "sluice.live_result";

/// The Flight action asking the executor's reader of result `key` (the
/// body) to report, on its stream, once all it was handed so far has been
/// sent; answers the sync's number as decimal text.
pub const LIVE_RESULT_SYNC_ACTION: &str = "sluice.live_result_sync";

/// Most bytes of batch one stream message carries (the executor's gRPC
/// messages are capped at 16 MiB); larger batches are sent in slices.
const MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Bytes of batches an executor queues per result partition for the
/// stream before its tasks spill the rest to disk: enough to ride out the
/// frontend's pauses without a round trip through a file.
const FORWARD_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Largest stream message the frontend accepts.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long asking an executor to start following may take.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(2);

/// Message tags on a result stream.
const BATCH: u8 = 0;
const FINISHED: u8 = 1;
const FAILED: u8 = 2;
const SYNCED: u8 = 3;

/// A stream of result messages, as an executor's Flight service answers.
type ResultMessages = BoxStream<'static, std::result::Result<arrow_flight::Result, Status>>;

/// Executor side: the stream answering [`LIVE_RESULT_ACTION`] for result
/// `key`, read by a reader registered now, before the answer leaves; an
/// error when the result has a reader in this process already (the
/// frontend that made the key is here, or another executor of this process
/// forwards it), so that a sync reaches the stream that asked for it.
pub fn forward(key: &str) -> std::result::Result<ResultMessages, Status> {
    let reader = LiveReader::first(key, FORWARD_QUEUE_BYTES).ok_or_else(|| {
        Status::already_exists(format!("result {key} has a reader in this process"))
    })?;
    let pending: Vec<Bytes> = Vec::new();
    Ok(stream::unfold(
        (Some(reader), pending),
        |(reader, mut pending)| async move {
            if let Some(message) = pending.pop() {
                return Some((Ok(body(message)), (reader, pending)));
            }
            let mut reader = reader?;
            loop {
                match reader.next_item().await.and_then(encode) {
                    Ok(mut messages) => {
                        messages.reverse();
                        if let Some(first) = messages.pop() {
                            return Some((Ok(body(first)), (Some(reader), messages)));
                        }
                    }
                    Err(e) => return Some((Err(Status::internal(e.to_string())), (None, pending))),
                }
            }
        },
    )
    .boxed())
}

/// Executor side: the answer to [`LIVE_RESULT_SYNC_ACTION`] for result
/// `key`.
pub fn sync(key: &str) -> std::result::Result<arrow_flight::Result, Status> {
    let number = live_results::request_sync(key)
        .ok_or_else(|| Status::not_found(format!("no reader of result {key} here")))?;
    Ok(body(Bytes::from(number.to_string())))
}

fn body(bytes: Bytes) -> arrow_flight::Result {
    arrow_flight::Result { body: bytes }
}

/// `item` as stream messages: a tag, the partition and attempt, then the
/// batch as an Arrow IPC stream (in slices of at most [`MESSAGE_BYTES`]),
/// the failure's reason or the sync's number.
fn encode(item: LiveItem) -> Result<Vec<Bytes>> {
    let header = |tag: u8, partition: usize, attempt: u64| {
        let mut message = BytesMut::new();
        message.put_u8(tag);
        message.put_u64_le(partition as u64);
        message.put_u64_le(attempt);
        message
    };
    Ok(match item {
        LiveItem::Batch {
            partition,
            attempt,
            batch,
        } => {
            let slices = batch.get_array_memory_size().div_ceil(MESSAGE_BYTES).max(1);
            let rows = batch.num_rows().div_ceil(slices).max(1);
            // Room for a slice's IPC form, so that writing it does not
            // reallocate as it grows.
            let estimate = batch.get_array_memory_size() / slices + 1024;
            let mut messages = Vec::with_capacity(slices);
            let mut offset = 0;
            while offset < batch.num_rows() {
                let slice = batch.slice(offset, rows.min(batch.num_rows() - offset));
                offset += slice.num_rows();
                let mut message = header(BATCH, partition, attempt);
                message.reserve(estimate);
                let mut message = message.writer();
                let mut writer = StreamWriter::try_new(&mut message, &slice.schema())?;
                writer.write(&slice)?;
                writer.finish()?;
                drop(writer);
                messages.push(message.into_inner().freeze());
            }
            messages
        }
        LiveItem::Finished { partition, attempt } => {
            vec![header(FINISHED, partition, attempt).freeze()]
        }
        LiveItem::Failed {
            partition,
            attempt,
            reason,
        } => {
            let mut message = header(FAILED, partition, attempt);
            message.put_slice(reason.as_bytes());
            vec![message.freeze()]
        }
        LiveItem::Synced(number) => {
            let mut message = header(SYNCED, 0, 0);
            message.put_u64_le(number);
            vec![message.freeze()]
        }
    })
}

/// `message` as the item it encodes.
fn decode(mut message: Bytes) -> Result<LiveItem> {
    let malformed = || DataFusionError::Execution("a malformed result stream message".into());
    if message.len() < 17 {
        return Err(malformed());
    }
    let tag = message.get_u8();
    let partition = message.get_u64_le() as usize;
    let attempt = message.get_u64_le();
    Ok(match tag {
        BATCH => {
            // Decoded in place: the batch's buffers are the message's.
            let mut decoder = StreamDecoder::new();
            let mut buffer = Buffer::from(message);
            let mut batch = None;
            while !buffer.is_empty() {
                if let Some(decoded) = decoder.decode(&mut buffer)? {
                    batch = Some(decoded);
                }
            }
            let batch = batch.ok_or_else(malformed)?;
            LiveItem::Batch {
                partition,
                attempt,
                batch,
            }
        }
        FINISHED => LiveItem::Finished { partition, attempt },
        FAILED => LiveItem::Failed {
            partition,
            attempt,
            reason: String::from_utf8_lossy(&message).into_owned(),
        },
        SYNCED if message.len() == 8 => LiveItem::Synced(message.get_u64_le()),
        _ => return Err(malformed()),
    })
}

/// An executor's Flight service, as the frontend reaches it.
#[derive(Debug, Clone)]
pub struct ExecutorFlight {
    /// `host:port`, for messages.
    pub address: String,
    /// A channel to its Flight port.
    pub channel: Channel,
}

/// Frontend side: follows result `key` on `executors` into `job`; those
/// that cannot be reached are left out (their tasks' output comes with
/// Ballista's result fetch).
pub async fn follow(
    executors: Vec<ExecutorFlight>,
    key: &str,
    job: Arc<LiveJob>,
) -> Box<dyn ResultFollower> {
    let started = futures::future::join_all(executors.into_iter().map(|executor| async move {
        let inner = FlightServiceClient::new(executor.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut client = FlightClient::new_from_inner(inner);
        let action = Action::new(LIVE_RESULT_ACTION, key.to_string());
        match tokio::time::timeout(FOLLOW_TIMEOUT, client.do_action(action)).await {
            Ok(Ok(stream)) => Some((executor, stream)),
            Ok(Err(e)) => {
                tracing::debug!("following result {key} on {}: {e}", executor.address);
                None
            }
            Err(_) => {
                tracing::debug!("following result {key} on {}: timed out", executor.address);
                None
            }
        }
    }))
    .await;
    let followed = started
        .into_iter()
        .flatten()
        .map(|(executor, stream)| {
            let (synced, seen) = watch::channel(Some(0));
            let pump = tokio::spawn(pump(
                stream,
                Arc::clone(&job),
                executor.address.clone(),
                synced,
            ));
            Followed {
                executor,
                seen,
                pump,
            }
        })
        .collect();
    Box::new(Following {
        key: key.to_string(),
        followed,
    })
}

/// One executor followed.
struct Followed {
    executor: ExecutorFlight,
    /// The last sync its stream reported; `None` once the stream broke.
    seen: watch::Receiver<Option<u64>>,
    pump: JoinHandle<()>,
}

/// The executors following one result; dropping it stops them.
struct Following {
    key: String,
    followed: Vec<Followed>,
}

impl Drop for Following {
    fn drop(&mut self) {
        for followed in &self.followed {
            followed.pump.abort();
        }
    }
}

#[async_trait]
impl ResultFollower for Following {
    async fn catch_up(mut self: Box<Self>) -> Result<()> {
        let key = self.key.clone();
        let syncs = self.followed.iter_mut().map(|followed| {
            let key = key.clone();
            async move {
                let lost = |why: String| {
                    DataFusionError::Execution(format!(
                        "rows of executor {} were lost on their way: {why}",
                        followed.executor.address
                    ))
                };
                let mut client = FlightClient::new(followed.executor.channel.clone());
                let action = Action::new(LIVE_RESULT_SYNC_ACTION, key);
                let answer = async {
                    let mut answers = client.do_action(action).await?;
                    answers.next().await.transpose()
                };
                let number = match answer.await {
                    Ok(Some(text)) => std::str::from_utf8(&text)
                        .ok()
                        .and_then(|text| text.parse::<u64>().ok())
                        .ok_or_else(|| lost("a malformed sync answer".into()))?,
                    Ok(None) => return Err(lost("no sync answer".into())),
                    Err(e) => return Err(lost(e.to_string())),
                };
                followed
                    .seen
                    .wait_for(|seen| seen.is_none_or(|seen| seen >= number))
                    .await
                    .map_err(|_| lost("its stream ended".into()))?
                    .ok_or_else(|| lost("its stream broke".into()))
                    .map(|_| ())
            }
        });
        let synced = futures::future::try_join_all(syncs).await.map(|_| ());
        // Every stream has delivered all it will: following stops here.
        drop(self);
        synced
    }
}

/// Writes what `stream` from executor `address` brings into `job`,
/// reporting syncs on `synced`; when the stream breaks, `job` is broken off
/// and `synced` set to `None`.
async fn pump(
    mut stream: BoxStream<'static, arrow_flight::error::Result<Bytes>>,
    job: Arc<LiveJob>,
    address: String,
    synced: watch::Sender<Option<u64>>,
) {
    let mut writers: HashMap<(usize, u64), LiveWriter> = HashMap::new();
    let spill_dir = std::env::temp_dir().join("sluice-live-results");
    let file_id = uuid::Uuid::new_v4();
    let broke = loop {
        let message = match stream.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => break e.to_string(),
            None => break "the executor ended it".to_string(),
        };
        let item = match decode(message) {
            Ok(item) => item,
            Err(e) => break e.to_string(),
        };
        match item {
            LiveItem::Batch {
                partition,
                attempt,
                batch,
            } => {
                let writer = writers.entry((partition, attempt)).or_insert_with(|| {
                    let spill = spill_dir.join(format!("{file_id}-{partition}-{attempt}.arrow"));
                    job.open_partition(partition, batch.schema(), spill)
                });
                if let Err(e) = writer.push_when_room(batch).await {
                    break e.to_string();
                }
            }
            LiveItem::Finished { partition, attempt } => {
                if let Some(writer) = writers.remove(&(partition, attempt)) {
                    if let Err(e) = writer.finish() {
                        break e.to_string();
                    }
                }
            }
            // Its writer dropped unfinished marks the partition failed.
            LiveItem::Failed {
                partition, attempt, ..
            } => drop(writers.remove(&(partition, attempt))),
            LiveItem::Synced(number) => {
                synced.send_replace(Some(number));
            }
        }
    };
    job.break_off(&format!(
        "the result stream from executor {address} broke: {broke}"
    ));
    synced.send_replace(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    #[test]
    fn items_cross_the_stream_intact_and_big_batches_in_slices() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let rows = 300_000;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|n| format!("row {n}")),
                )),
            ],
        )
        .unwrap();
        let messages = encode(LiveItem::Batch {
            partition: 3,
            attempt: 7,
            batch: batch.clone(),
        })
        .unwrap();
        assert!(messages.len() > 1, "a big batch is sliced");
        let mut decoded = Vec::new();
        for message in messages {
            assert!(message.len() <= 2 * MESSAGE_BYTES);
            match decode(message).unwrap() {
                LiveItem::Batch {
                    partition: 3,
                    attempt: 7,
                    batch,
                } => decoded.push(batch),
                other => panic!("{other:?}"),
            }
        }
        let decoded =
            datafusion::arrow::compute::concat_batches(&batch.schema(), &decoded).unwrap();
        assert_eq!(decoded, batch);

        let ended = encode(LiveItem::Finished {
            partition: 1,
            attempt: 2,
        })
        .unwrap();
        assert!(matches!(
            decode(ended[0].clone()).unwrap(),
            LiveItem::Finished {
                partition: 1,
                attempt: 2
            }
        ));
        let failed = encode(LiveItem::Failed {
            partition: 4,
            attempt: 5,
            reason: "gone".into(),
        })
        .unwrap();
        assert!(matches!(
            decode(failed[0].clone()).unwrap(),
            LiveItem::Failed { partition: 4, attempt: 5, reason } if reason == "gone"
        ));
        let synced = encode(LiveItem::Synced(9)).unwrap();
        assert!(matches!(
            decode(synced[0].clone()).unwrap(),
            LiveItem::Synced(9)
        ));
        assert!(decode(Bytes::from_static(b"\x09short")).is_err());
    }
}
