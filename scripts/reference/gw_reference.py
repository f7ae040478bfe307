#!/usr/bin/env python3
"""Plain-PyTorch reference of shimmer-rs's Global Workspace training step.

Written for the benchmarks of issue 8: the same model (shimmer's GWEncoder /
GWDecoder MLPs, fusion `act(sum_d s_d * e_d(z_d))`), the same losses
(two-domains: demi-cycles, cycles, translations, contrastive; fusion: the
broadcast loss plus contrastive, with random / fixed-shared / single-domain
selection), `combine_loss` as a mean of `coef * metric`, and AdamW +
OneCycleLR stepped every step. No Lightning, no shimmer.

It reads the same experiment YAML as `shimmer bench` (the `domains`,
`workspace`, `loss`, `optim` and `data` sections; a domain's latent size is
its `latent_dim`, else its plugin `config.dim`, as for identity models),
draws random standard-normal batches of the same shapes, and times the same
work per step: forward pass and metrics (read back to the host), the loss
read back, backward pass, AdamW + scheduler step. It prints a summary and
one JSON line with the fields of `shimmer bench`.

    python gw_reference.py experiments/bench/w2.yaml --steps 20 --warmup 3 \
        --threads 1 [--device cuda [--precision bf16]] [--json out.json]

`--precision bf16` runs the forward pass under
`torch.autocast("cuda", dtype=torch.bfloat16)` (linear layers and the
contrastive logits in bfloat16, the rest in float32), as shimmer-rs's
`precision: bf16` does.

The numbers do not match shimmer-rs's (other initial weights and data);
only the work does.
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


def linear(n_in, n_out):
    # nn.Linear's own init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as shimmer-rs.
    return nn.Linear(n_in, n_out)


def mlp(n_in, hidden, n_layers, n_out):
    """shimmer's GWEncoder / GWDecoder: Linear ReLU [Linear ReLU] x n Linear."""
    layers = [linear(n_in, hidden), nn.ReLU()]
    for _ in range(n_layers):
        layers += [linear(hidden, hidden), nn.ReLU()]
    layers.append(linear(hidden, n_out))
    return nn.Sequential(*layers)


ACTIVATIONS = {
    "tanh": torch.tanh,
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
}


class GlobalWorkspace(nn.Module):
    def __init__(self, dims, ws):
        super().__init__()
        enc = ws.get("encoders", {}) or {}
        dec = ws.get("decoders", {}) or {}
        self.dims = dims
        self.encoders = nn.ModuleDict(
            {
                d: mlp(n, enc.get("hidden", 32), enc.get("n_layers", 1), ws["dim"])
                for d, n in dims.items()
            }
        )
        self.decoders = nn.ModuleDict(
            {
                d: mlp(ws["dim"], dec.get("hidden", 32), dec.get("n_layers", 1), n)
                for d, n in dims.items()
            }
        )
        self.act = ACTIVATIONS[ws.get("activation", "tanh")]
        flavour = ws["flavour"]
        default = (
            {"type": "single_domain"}
            if flavour == "two_domains"
            else {"type": "random", "temperature": 0.2}
        )
        self.selection = ws.get("selection") or default
        if self.selection["type"] not in ("single_domain", "fixed_shared", "random"):
            sys.exit(f"reference: selection {self.selection['type']} is not implemented")
        c = ws.get("contrastive", {}) or {}
        scale = torch.tensor([c.get("logit_scale", math.log(1 / 0.07))])
        if c.get("learn", False):
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    def encode(self, x):
        return {d: self.encoders[d](z) for d, z in x.items()}

    def scores(self, encoded):
        names = list(encoded)
        first = next(iter(encoded.values()))
        b, n = first.shape[0], len(names)
        if n == 1:
            return {names[0]: torch.ones(b, device=first.device)}
        kind = self.selection["type"]
        if kind == "fixed_shared":
            s = torch.full((b, n), 1.0 / n, device=first.device)
        elif kind == "random":
            u = torch.rand(b, n, device=first.device)
            s = torch.softmax(u / self.selection.get("temperature", 0.2), dim=1)
        else:  # single_domain
            idx = torch.randint(0, n, (b,), device=first.device)
            s = F.one_hot(idx, n).to(first.dtype)
        return {d: s[:, i] for i, d in enumerate(names)}

    def fuse(self, encoded, scores):
        total = sum(scores[d].unsqueeze(1) * e for d, e in encoded.items())
        return self.act(total)

    def encode_and_fuse(self, x):
        e = self.encode(x)
        return self.fuse(e, self.scores(e))

    def decode(self, h, domains=None):
        return {d: self.decoders[d](h) for d in (domains or self.dims)}

    def contrastive(self, x, y):
        exp = self.logit_scale.exp()
        logits = exp.clamp(max=100.0) * F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()
        labels = torch.arange(x.shape[0], device=x.device)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        return loss, exp.reshape(())


def mean(values):
    return torch.stack(values).mean()


def contrastive_metrics(gw, batch):
    losses, extra, seen = {}, {}, []
    for latents in batch.values():
        if len(latents) != 2:
            continue
        enc = gw.encode(latents)
        for d1, z1 in enc.items():
            for d2, z2 in enc.items():
                pair = {d1, d2}
                if d1 == d2 or pair in seen:
                    continue
                seen.append(pair)
                name = f"contrastive_{d1}_and_{d2}"
                losses[name], extra[f"{name}_logit_scale"] = gw.contrastive(z1, z2)
    if losses:
        losses["contrastives"] = mean(list(losses.values()))
        losses.update(extra)
    return losses


def two_domain_metrics(gw, batch):
    demi, cyc, tr = {}, {}, {}
    for latents in batch.values():
        if len(latents) == 1:
            (s, z), = latents.items()
            h = gw.encode_and_fuse(latents)
            demi[f"demi_cycle_{s}"] = F.mse_loss(gw.decode(h, [s])[s], z)
            for t in gw.dims:
                if t == s:
                    continue
                mid = gw.decode(h, [t])
                back = gw.encode_and_fuse(mid)
                cyc[f"cycle_{s}_through_{t}"] = F.mse_loss(gw.decode(back, [s])[s], z)
        else:
            for target, z in latents.items():
                sources = {d: x for d, x in latents.items() if d != target}
                h = gw.encode_and_fuse(sources)
                name = f"translation_{'/'.join(sources)}_to_{target}"
                tr[name] = F.mse_loss(gw.decode(h, [target])[target], z)
    out = {}
    for family, losses in (("demi_cycles", demi), ("cycles", cyc), ("translations", tr)):
        out.update(losses)
        if losses:
            out[family] = mean(list(losses.values()))
    out.update(contrastive_metrics(gw, batch))
    return out


def label(names):
    return "{" + ",".join(sorted(names)) + "}"


def broadcast_metrics(gw, batch):
    losses = {}
    lists = {"demi_cycles": [], "cycles": [], "translations": [], "fused": []}
    n_model = len(gw.dims)
    for latents in batch.values():
        encoded = gw.encode(latents)
        group = list(latents)
        case = label(group)
        n = len(group)
        for mask in range(1, 1 << n):
            selected = [group[i] for i in range(n) if (mask >> (n - 1 - i)) & 1]
            sel_enc = {d: encoded[d] for d in selected}
            s_label = label(selected)
            h = gw.fuse(sel_enc, gw.scores(sel_enc))
            decoded = gw.decode(h)
            for d, pred in decoded.items():
                if d not in latents:
                    continue
                if len(selected) == 1 and d in selected:
                    family = "demi_cycles"
                elif d not in selected:
                    family = "translations"
                else:
                    family = "fused"
                name = f"from_{s_label}_to_{d}_loss"
                losses[name] = F.mse_loss(pred, latents[d])
                lists[family].append(name)
            if len(selected) < n_model:
                inverse = {d: t for d, t in decoded.items() if d not in selected}
                i_label = label(inverse)
                back = gw.encode_and_fuse(inverse)
                re_decoded = gw.decode(back, selected)
                for d in selected:
                    name = f"from_{s_label}_through_{i_label}_to_{d}_case_{case}_loss"
                    losses[name] = F.mse_loss(re_decoded[d], latents[d])
                    lists["cycles"].append(name)
    out = {}
    for family, names in lists.items():
        if names:
            out[family] = mean([losses[n] for n in names])
    out.update(losses)
    return out


def metrics_and_loss(gw, flavour, coefs, batch):
    if flavour == "two_domains":
        metrics = two_domain_metrics(gw, batch)
    else:
        metrics = contrastive_metrics(gw, batch)
        metrics.update(broadcast_metrics(gw, batch))
    terms = [c * metrics[n] for n, c in coefs.items() if c > 0 and n in metrics]
    loss = mean(terms)
    if flavour == "fusion":
        parts = [metrics[n] for n, c in coefs.items() if c > 0 and n != "contrastives" and n in metrics]
        if parts:
            metrics["broadcast_loss"] = mean(parts)
    return loss, metrics


def proc_status_mib(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def nvidia_smi_own_mib():
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except OSError:
        return None
    pid = str(os.getpid())
    used = [float(m) for p, m in (l.split(",", 1) for l in out.splitlines() if "," in l) if p.strip() == pid]
    return sum(used) if used else None


def domain_dims(exp):
    dims = {}
    for name, d in exp["domains"].items():
        if "latent_dim" in d:
            dims[name] = d["latent_dim"]
        elif (d.get("model") or {}).get("type", "identity") == "identity":
            dims[name] = d["config"]["dim"]
        elif "latent_dim" in d.get("model", {}):
            dims[name] = d["model"]["latent_dim"]
        else:
            sys.exit(f"reference: cannot tell the latent size of domain {name}")
    return dims


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
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    a = p.parse_args()
    if a.precision == "bf16" and not a.device.startswith("cuda"):
        sys.exit("reference: --precision bf16 needs --device cuda")

    threads = a.threads or int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)
    device = torch.device(a.device)
    started = time.perf_counter()

    with open(a.experiment) as f:
        exp = yaml.safe_load(f)
    ws = exp["workspace"]
    dims = domain_dims(exp)
    coefs = {k: float(v) for k, v in exp["loss"]["coefs"].items()}
    optim_cfg = exp.get("optim", {}) or {}
    data = exp["data"]
    bs = data.get("batch_size", 32)
    groups = [g["domains"] for g in data["groups"]]

    gw = GlobalWorkspace(dims, ws).to(device)
    total = a.warmup + a.steps
    lr = float(optim_cfg.get("lr", 1e-3))
    sched_cfg = optim_cfg.get("scheduler", {}) or {}
    opt = torch.optim.AdamW(
        [q for q in gw.parameters() if q.requires_grad],
        lr=lr,
        betas=tuple(optim_cfg.get("betas", (0.9, 0.999))),
        eps=float(optim_cfg.get("eps", 1e-8)),
        weight_decay=float(optim_cfg.get("weight_decay", 0.01)),
    )
    if sched_cfg.get("type", "one_cycle") == "one_cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=float(sched_cfg.get("max_lr", lr)), total_steps=total
        )
    else:
        sched = None

    # Host batches, moved to the device every step (as shimmer-rs does).
    batches = [
        {tuple(g): {d: torch.randn(bs, dims[d]) for d in g} for g in groups}
        for _ in range(max(1, min(a.preload, total)))
    ]
    samples_per_step = bs * len(groups)
    setup_s = time.perf_counter() - started
    rss_before = proc_status_mib("VmRSS:")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    last_loss = float("nan")

    def step(k):
        nonlocal last_loss
        host = batches[k % len(batches)]
        batch = {g: {d: z.to(device, non_blocking=True) for d, z in lat.items()} for g, lat in host.items()}
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss, metrics = metrics_and_loss(gw, ws["flavour"], coefs, batch)
        torch.stack([m.detach().float() for m in metrics.values()]).tolist()
        last_loss = loss.item()
        if not math.isfinite(last_loss):
            sys.exit(f"reference: the loss became {last_loss} at step {k}")
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()

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
        "device": str(device) if device.type == "cpu" else f"cuda:{device.index or 0}",
        "precision": a.precision,
        "threads": torch.get_num_threads(),
        "steps": a.steps,
        "warmup": a.warmup,
        "samples_per_step": samples_per_step,
        "seconds": seconds,
        "steps_per_s": a.steps / seconds,
        "samples_per_s": a.steps * samples_per_step / seconds,
        "peak_rss_mib": proc_status_mib("VmHWM:"),
        "rss_before_steps_mib": rss_before,
        "device_mem_mib": nvidia_smi_own_mib() if device.type == "cuda" else None,
        "setup_s": setup_s,
        "last_loss": last_loss,
    }
    if device.type == "cuda":
        report["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(
        f"{report['workload']} on {report['device']} ({report['threads']} thread(s)), "
        f"{report['implementation']}: {a.steps} steps in {seconds:.3f} s after {a.warmup} warm-up\n"
        f"  {report['steps_per_s']:.2f} steps/s, {report['samples_per_s']:.0f} samples/s\n"
        f"  peak RSS {report['peak_rss_mib']:.0f} MiB, last loss {last_loss:.5f}"
    )
    line = json.dumps(report)
    print(line)
    if a.json:
        with open(a.json, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
