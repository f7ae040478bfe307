"""Checks a `shimmer export` file with NumPy alone.

usage: export_check.py EXPORT CHECKPOINT PREDICTIONS DOMAIN=FILE...
* its names are shimmer's state dict: the checkpoint's model tensors, each
  domain model's under `gw_mod.domain_mods.<d>.`, and a `loss_mod.` alias of
  every `gw_mod.` / `selection_mod.` tensor; values equal bit for bit;
* the workspace computed from the exported weights (shimmer's GW encoder
  and decoder MLPs: Linear, ReLU, ..., Linear; tanh fusion) gives what
  `shimmer predict` wrote, from its latents.
Prints one JSON line of what it compared; exits non-zero on a mismatch."""

import json
import sys

import numpy as np
from safetensors.numpy import load_file


def mlp(weights, prefix, x):
    layers = sorted({int(k[len(prefix):].split(".")[0]) for k in weights if k.startswith(prefix)})
    for n, i in enumerate(layers):
        x = x @ weights[f"{prefix}{i}.weight"].T + weights[f"{prefix}{i}.bias"]
        if n < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def main(export, checkpoint, predictions, domains):
    out = load_file(export)
    ckpt = load_file(checkpoint)
    expected = {k: v for k, v in ckpt.items() if not k.startswith(("optimizer.", "trainer."))}
    for spec in domains:
        name, path = spec.split("=", 1)
        for k, v in load_file(path).items():
            expected[f"gw_mod.domain_mods.{name}.{k}"] = v
    # shimmer's loss module holds the GW module and the domain modules.
    for k in list(expected):
        if k.startswith(("gw_mod.", "selection_mod.")):
            expected["loss_mod." + k] = expected[k]
        if k.startswith("gw_mod.domain_mods."):
            expected["loss_mod." + k[len("gw_mod."):]] = expected[k]
    if sorted(out) != sorted(expected):
        sys.exit(f"names differ: extra {sorted(set(out) - set(expected))}, missing {sorted(set(expected) - set(out))}")
    for k, v in expected.items():
        if out[k].dtype != v.dtype or out[k].shape != v.shape or not np.array_equal(out[k], v):
            sys.exit(f"{k} differs from its source")
    pred = load_file(predictions)
    names = sorted({k.split("/")[1] for k in pred if k.startswith("latent/")})
    worst = 0.0
    for src in names:
        z = pred[f"latent/{src}"]
        # The items as given, through the exported domain module (a linear
        # encoder in the tutorial), are the latents.
        w = out.get(f"gw_mod.domain_mods.{src}.encoder.weight")
        if w is not None:
            x = pred[f"input/{src}"]
            latent = x @ w.T + out[f"gw_mod.domain_mods.{src}.encoder.bias"]
            worst = max(worst, float(np.abs(latent - z).max()))
        state = np.tanh(mlp(out, f"gw_mod.gw_encoders.{src}.", z))
        worst = max(worst, float(np.abs(state - pred[f"gw/{src}"]).max()))
        for dst in names:
            got = mlp(out, f"gw_mod.gw_decoders.{dst}.", state)
            worst = max(worst, float(np.abs(got - pred[f"pred/{src}_to_{dst}"]).max()))
    if worst > 1e-5:
        sys.exit(f"the exported weights compute other predictions: max |diff| {worst}")
    print(json.dumps({"tensors": len(out), "domains": names, "max_abs_diff": worst}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
