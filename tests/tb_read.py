"""Reads a TensorBoard run folder with TensorBoard's own event reader (the
plugin event accumulator its server uses) and prints what it found as JSON:
scalars per tag as [step, value] pairs, text per tag, and HParams records."""

import json
import sys

from google.protobuf import json_format
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util


def tags_of(acc, plugin):
    try:
        return acc.PluginTagToContent(plugin)
    except KeyError:
        return {}


def main(run_dir):
    acc = pea.EventAccumulator(run_dir, size_guidance={pea.TENSORS: 0})
    acc.Reload()
    out = {"scalars": {}, "text": {}, "hparams": {}}
    for tag in tags_of(acc, "scalars"):
        out["scalars"][tag] = [
            [e.step, float(tensor_util.make_ndarray(e.tensor_proto).item())]
            for e in acc.Tensors(tag)
        ]
    for tag in tags_of(acc, "text"):
        out["text"][tag] = [
            [e.step, [b.decode("utf-8") for b in tensor_util.make_ndarray(e.tensor_proto).flatten()]]
            for e in acc.Tensors(tag)
        ]
    for tag, content in tags_of(acc, "hparams").items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        out["hparams"][tag] = json_format.MessageToDict(data, preserving_proto_field_name=True)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
