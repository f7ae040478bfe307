#!/usr/bin/env python3
"""Plain-PyTorch reference of shimmer-rs's domain-model pretraining step.

For the benchmark of the Simple Shapes pipeline: the same model as a
pretraining experiment's domain model (shimmer-ssd's visual VAE, `type:
conv_vae`: four stride-2 Conv2d + BatchNorm2d + ReLU, linear heads to mean
and log-variance, a ConvTranspose2d decoder with BatchNorm2d and ReLU, zero
padding, Conv2d and sigmoid; or its attribute VAE, `type: attribute_vae`),
the same loss (summed Gaussian NLL of the reconstruction plus beta times
the KL; cross-entropy on the class for attributes), and AdamW + OneCycleLR
stepped every step, in training mode (batch norm on batch statistics). No
Lightning, no shimmer.

It reads the same experiment YAML as `shimmer bench` (following
`extends`), draws random batches of the same shapes (images uniform in
[0, 1]), and times the same work per step: forward pass, the loss and
metrics read back, backward pass, AdamW + scheduler step. It prints a
summary and one JSON line with the fields of `shimmer bench`.

    python vae_reference.py experiments/simple-shapes/pretrain_v.yaml \
        --steps 20 --warmup 3 --threads 1 [--device cuda] [--json out.json]
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
import yaml
from torch import nn


def load_experiment(path):
    """The YAML with its `extends` bases merged under it (mappings key by key)."""
    with open(path) as f:
        exp = yaml.safe_load(f) or {}
    bases = exp.pop("extends", [])
    bases = [bases] if isinstance(bases, str) else bases
    merged = {}
    for b in bases:
        merge(merged, load_experiment(os.path.join(os.path.dirname(path), b)))
    merge(merged, exp)
    return merged


def merge(into, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


def gaussian_nll_sum(mu, x):
    return (0.5 * (x - mu) ** 2 + 0.5 * math.log(2 * math.pi)).sum()


def kl(mean, logvar):
    return -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum()


class ConvVae(nn.Module):
    def __init__(self, channels, ae_dim, z):
        super().__init__()
        dims = [ae_dim // 8, ae_dim // 4, ae_dim // 2, ae_dim]
        enc, c = [], channels
        for d in dims:
            enc += [nn.Conv2d(c, d, 4, 2, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU()]
            c = d
        self.encoder = nn.Sequential(*enc)
        self.q_mean = nn.Linear(ae_dim * 4, z)
        self.q_logvar = nn.Linear(ae_dim * 4, z)
        dec, c = [], z
        for k, d in enumerate([ae_dim, ae_dim // 2, ae_dim // 4]):
            conv = nn.ConvTranspose2d(c, d, 8, 1, bias=False) if k == 0 else nn.ConvTranspose2d(c, d, 4, 2, 1, bias=False)
            dec += [conv, nn.BatchNorm2d(d), nn.ReLU()]
            c = d
        self.decoder = nn.Sequential(*dec)
        self.out = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(c, channels, 4, 1, 1), nn.Sigmoid())
        self.channels = channels

    def loss(self, x, beta):
        h = self.encoder(x.view(x.size(0), self.channels, 32, 32)).flatten(1)
        mean, logvar = self.q_mean(h), self.q_logvar(h)
        zs = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        x_hat = self.out(self.decoder(zs[:, :, None, None])).flatten(1)
        rec = gaussian_nll_sum(x_hat, x)
        k = kl(mean, logvar)
        return rec + beta * k, [rec, k]


class AttributeVae(nn.Module):
    def __init__(self, width, classes, hidden, z):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, z), nn.ReLU()
        )
        self.q_mean, self.q_logvar = nn.Linear(z, z), nn.Linear(z, z)
        self.decoder = nn.Sequential(nn.Linear(z, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.categories = nn.Linear(hidden, classes)
        self.attributes = nn.Sequential(nn.Linear(hidden, width - classes), nn.Tanh())
        self.classes = classes

    def loss(self, x, beta):
        h = self.encoder(x)
        mean, logvar = self.q_mean(h), self.q_logvar(h)
        zs = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        d = self.decoder(zs)
        cat = F.cross_entropy(self.categories(d), x[:, : self.classes].argmax(1), reduction="sum")
        att = gaussian_nll_sum(self.attributes(d), x[:, self.classes :])
        k = kl(mean, logvar)
        return cat + att + beta * k, [cat, att, k]


def proc_status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--preload", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["f32"], default="f32")
    a = p.parse_args()

    threads = a.threads or int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)
    device = torch.device(a.device)
    started = time.perf_counter()
    exp = load_experiment(a.experiment)
    domain = exp["pretrain"]["domain"]
    model_cfg = exp["domains"][domain]["model"]
    beta = float(model_cfg.get("beta", 1.0))
    bs = exp.get("data", {}).get("batch_size", 32)
    if model_cfg["type"] == "conv_vae":
        channels = int(model_cfg.get("channels", 3))
        model = ConvVae(channels, int(model_cfg.get("ae_dim", 256)), int(model_cfg["latent_dim"]))
        batches = [torch.rand(bs, channels * 32 * 32) for _ in range(a.preload)]
    elif model_cfg["type"] == "attribute_vae":
        classes = int(model_cfg.get("classes", 3))
        model = AttributeVae(classes + 8, classes, int(model_cfg["hidden"]), int(model_cfg["latent_dim"]))
        batches = []
        for _ in range(a.preload):
            onehot = F.one_hot(torch.randint(0, classes, (bs,)), classes).float()
            batches.append(torch.cat([onehot, torch.rand(bs, 8) * 2 - 1], 1))
    else:
        sys.exit(f"reference: model type {model_cfg['type']} is not a VAE this script knows")
    model = model.to(device).train()
    optim_cfg = exp.get("optim", {}) or {}
    lr = float(optim_cfg.get("lr", 1e-3))
    total = a.warmup + a.steps
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(optim_cfg.get("weight_decay", 0.01)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    setup_s = time.perf_counter() - started
    rss_before = proc_status_mib("VmRSS:")
    last_loss = float("nan")

    def step(k):
        nonlocal last_loss
        x = batches[k % len(batches)].to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        loss, metrics = model.loss(x, beta)
        torch.stack([m.detach() for m in metrics]).tolist()
        last_loss = loss.item()
        loss.backward()
        opt.step()
        sched.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for k in range(a.warmup):
        step(k)
    sync()
    t = time.perf_counter()
    for k in range(a.warmup, total):
        step(k)
    sync()
    seconds = time.perf_counter() - t
    report = {
        "implementation": f"pytorch-{torch.__version__}",
        "workload": exp.get("name", os.path.basename(a.experiment)),
        "device": "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}",
        "precision": "f32",
        "threads": torch.get_num_threads(),
        "steps": a.steps,
        "warmup": a.warmup,
        "samples_per_step": bs,
        "seconds": seconds,
        "steps_per_s": a.steps / seconds,
        "samples_per_s": a.steps * bs / seconds,
        "peak_rss_mib": proc_status_mib("VmHWM:"),
        "rss_before_steps_mib": rss_before,
        "device_mem_mib": None,
        "setup_s": setup_s,
        "last_loss": last_loss,
    }
    print(
        f"{report['workload']} on {report['device']} ({report['threads']} thread(s)), "
        f"{report['implementation']}: {a.steps} steps in {seconds:.3f} s after {a.warmup} warm-up\n"
        f"  {report['steps_per_s']:.2f} steps/s, {report['samples_per_s']:.0f} samples/s"
    )
    line = json.dumps(report)
    print(line)
    if a.json:
        with open(a.json, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
