//! How Sluice's own physical plan nodes travel from the scheduler to the
//! executors inside task plans: [`SluicePhysicalCodec`] encodes a
//! [`SingleStageExec`], a [`ParallelWriteExec`] and a [`LiveResultExec`] and
//! hands every other node to Ballista's codec.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{
    AsExecutionPlan, PhysicalExtensionCodec, PhysicalPlanDecodeContext,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::PhysicalPlanNode;

use crate::live_result::LiveResultExec;
use crate::parallel_write::{with_input, ParallelWriteExec};
use crate::single_stage::SingleStageExec;

/// Marks a [`SingleStageExec`] in an encoded plan: the bytes it reads, then
/// its whole plan (a leaf to Ballista).
const SINGLE_STAGE_TAG: &[u8] = b"sluice.single_stage\0";

/// Marks a [`ParallelWriteExec`]: its `DataSinkExec` over a placeholder (the
/// real input travels as the node's child).
const PARALLEL_WRITE_TAG: &[u8] = b"sluice.parallel_write\0";

/// Marks a [`LiveResultExec`]: its result key (its input travels as the
/// node's child).
const LIVE_RESULT_TAG: &[u8] = b"sluice.live_result\0";

/// Ballista's physical codec plus Sluice's nodes. The scheduler encodes task
/// plans and the executors decode them with it.
#[derive(Debug, Default)]
pub struct SluicePhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl SluicePhysicalCodec {
    fn decode_plan(
        &self,
        bytes: &[u8],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = PhysicalPlanNode::try_decode(bytes)?;
        proto_converter.proto_to_execution_plan(&plan, &PhysicalPlanDecodeContext::new(ctx, self))
    }
}

impl PhysicalExtensionCodec for SluicePhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(node) = buf.strip_prefix(SINGLE_STAGE_TAG) {
            let (input_bytes, plan) = node.split_at_checked(8).ok_or_else(|| {
                DataFusionError::Internal("truncated SingleStageExec in a task plan".into())
            })?;
            let input_bytes = u64::from_le_bytes(input_bytes.try_into().expect("8 bytes"));
            let plan = self.decode_plan(plan, ctx, proto_converter)?;
            return Ok(Arc::new(SingleStageExec::from_parts(plan, input_bytes)?));
        }
        if let Some(node) = buf.strip_prefix(PARALLEL_WRITE_TAG) {
            let [input] = inputs else {
                return Err(DataFusionError::Internal(
                    "a ParallelWriteExec in a task plan has one input".into(),
                ));
            };
            let sink = with_input(
                self.decode_plan(node, ctx, proto_converter)?,
                Arc::clone(input),
            )?;
            return Ok(Arc::new(ParallelWriteExec::new(sink)?));
        }
        if let Some(key) = buf.strip_prefix(LIVE_RESULT_TAG) {
            let [input] = inputs else {
                return Err(DataFusionError::Internal(
                    "a LiveResultExec in a task plan has one input".into(),
                ));
            };
            let key = String::from_utf8(key.to_vec()).map_err(|_| {
                DataFusionError::Internal("a LiveResultExec's key is not UTF-8".into())
            })?;
            return Ok(Arc::new(LiveResultExec::new(Arc::clone(input), key)));
        }
        self.ballista.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(stage) = node.downcast_ref::<SingleStageExec>() {
            let (input, input_bytes) = stage.parts();
            buf.extend_from_slice(SINGLE_STAGE_TAG);
            buf.extend_from_slice(&input_bytes.to_le_bytes());
            return proto_converter
                .execution_plan_to_proto(input, self)?
                .try_encode(buf);
        }
        if let Some(write) = node.downcast_ref::<ParallelWriteExec>() {
            let placeholder = Arc::new(EmptyExec::new(write.children()[0].schema()));
            let sink = with_input(Arc::clone(write.sink()), placeholder)?;
            buf.extend_from_slice(PARALLEL_WRITE_TAG);
            return proto_converter
                .execution_plan_to_proto(&sink, self)?
                .try_encode(buf);
        }
        if let Some(live) = node.downcast_ref::<LiveResultExec>() {
            buf.extend_from_slice(LIVE_RESULT_TAG);
            buf.extend_from_slice(live.key().as_bytes());
            return Ok(());
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }
}
