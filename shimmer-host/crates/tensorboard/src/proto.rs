//! The TensorBoard protobuf messages shimmer writes (a subset of
//! `event.proto`, `summary.proto`, `tensor.proto`, the HParams plugin's
//! `plugin_data.proto`/`api.proto` and `struct.proto`), with TensorBoard's
//! field numbers.

use std::collections::BTreeMap;

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// Payload.
    #[prost(oneof = "event::What", tags = "3, 5, 7")]
    pub what: Option<event::What>,
}

/// Payloads of an [`Event`].
pub mod event {
    /// What an event carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// `brain.Event:2` in the first record of a file.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// Scalars, text, hparams.
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        /// Session start/stop markers.
        #[prost(message, tag = "7")]
        SessionLog(super::SessionLog),
    }
}

/// `tensorflow.SessionLog`: a `START` at step `s` tells TensorBoard that
/// events at steps `>= s` written before it are orphaned (a restart).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// 1 = START, 2 = STOP, 3 = CHECKPOINT.
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// Checkpoint path.
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    /// Message.
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// `SessionLog.status` of a (re)start.
pub const SESSION_START: i32 = 1;

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// Tag (`train/loss`).
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Plugin metadata.
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    /// The value.
    #[prost(oneof = "summary_value::Value", tags = "2, 4, 8")]
    pub value: Option<summary_value::Value>,
}

/// `tensorflow.Summary.Image`: an encoded image (PNG).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryImage {
    /// Height in pixels.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// Width in pixels.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grey, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// The PNG bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// Values of a [`SummaryValue`].
pub mod summary_value {
    /// A scalar or a tensor.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A scalar.
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        /// An image (TensorBoard's Images tab).
        #[prost(message, tag = "4")]
        Image(super::SummaryImage),
        /// A tensor (text uses a string tensor).
        #[prost(message, tag = "8")]
        Tensor(super::TensorProto),
    }
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// Which TensorBoard plugin reads this value.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    /// Display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub summary_description: String,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    /// Plugin name (`scalars`, `text`, `hparams`).
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// Plugin-specific serialized content.
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto` (only what string and float tensors need).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// `DataType`: 1 = float, 7 = string.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Float values.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// String values.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `DataType` code of float tensors.
pub const DT_FLOAT: i32 = 1;
/// `DataType` code of string tensors.
pub const DT_STRING: i32 = 7;

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// Dimensions.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
}

/// `tensorflow.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeDim {
    /// Size.
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorboard.HParamsPluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    /// Plugin data version (0).
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// Payload.
    #[prost(oneof = "hparams_plugin_data::Data", tags = "2, 3, 4")]
    pub data: Option<hparams_plugin_data::Data>,
}

/// Payloads of [`HParamsPluginData`].
pub mod hparams_plugin_data {
    /// Experiment description, or the start/end of one session (run).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        /// Which hyperparameters and metrics exist.
        #[prost(message, tag = "2")]
        Experiment(super::HParamsExperiment),
        /// A run's hyperparameter values.
        #[prost(message, tag = "3")]
        SessionStartInfo(super::SessionStartInfo),
        /// A run's end.
        #[prost(message, tag = "4")]
        SessionEndInfo(super::SessionEndInfo),
    }
}

/// `tensorboard.hparams.Experiment`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsExperiment {
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// Creation time.
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    /// Hyperparameters.
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    /// Metrics shown beside them.
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
    /// Name.
    #[prost(string, tag = "6")]
    pub name: String,
}

/// `tensorboard.hparams.HParamInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamInfo {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `DataType`: 1 string, 2 bool, 3 float64.
    #[prost(int32, tag = "4")]
    pub r#type: i32,
    /// Whether the value differs between the sessions (TensorBoard shows
    /// the columns that differ).
    #[prost(bool, tag = "7")]
    pub differs: bool,
}

/// `tensorboard.hparams.MetricInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricInfo {
    /// Which scalar tag.
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
}

/// `tensorboard.hparams.MetricName`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricName {
    /// Run sub-folder (empty: the run itself).
    #[prost(string, tag = "1")]
    pub group: String,
    /// Scalar tag.
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    /// Hyperparameter values.
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, ProtoValue>,
    /// Group name (empty).
    #[prost(string, tag = "4")]
    pub group_name: String,
    /// Start time.
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `tensorboard.hparams.SessionEndInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionEndInfo {
    /// `Status`: 1 success, 2 failure, 3 running, 4 unknown.
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// End time.
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// `google.protobuf.Value` (numbers, strings and booleans).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    /// The value.
    #[prost(oneof = "proto_value::Kind", tags = "2, 3, 4")]
    pub kind: Option<proto_value::Kind>,
}

/// Kinds of [`ProtoValue`].
pub mod proto_value {
    /// A number, a string or a boolean.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// A number.
        #[prost(double, tag = "2")]
        NumberValue(f64),
        /// A string.
        #[prost(string, tag = "3")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "4")]
        BoolValue(bool),
    }
}
