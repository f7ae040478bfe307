"""Reads a TensorBoard run folder with TensorBoard's own event reader (the
plugin event accumulator its server uses) and prints what it found as JSON:
scalars per tag as [step, value] pairs, text per tag, HParams records, and
images per tag as [step, width, height] with the PNG decoded by Pillow
(its own size must be the one the summary states)."""

import io
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
    out["images"] = {}
    for tag in tags_of(acc, "images"):
        rows = []
        for e in acc.Tensors(tag):
            parts = tensor_util.make_ndarray(e.tensor_proto)
            width, height = int(parts[0]), int(parts[1])
            from PIL import Image

            decoded = Image.open(io.BytesIO(parts[2]))
            decoded.load()
            if decoded.size != (width, height) or len(parts) != 3:
                sys.exit(f"image {tag} at step {e.step}: summary says {width}x{height}, PNG is {decoded.size}")
            rows.append([e.step, width, height])
        out["images"][tag] = rows
    for tag, content in tags_of(acc, "hparams").items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        out["hparams"][tag] = json_format.MessageToDict(data, preserving_proto_field_name=True)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
