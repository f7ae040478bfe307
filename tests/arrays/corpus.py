"""Test corpus of the `arrays` plugin, written and checked by NumPy itself.

    corpus.py make DIR    writes .npy files of every supported dtype in both
                          byte orders, C and Fortran order, 1-D to 3-D; a
                          .safetensors file (the `safetensors` package); PNG
                          folders in RGB, RGBA and grey (Pillow); and
                          DIR/cases.json: for each case, the plugin config
                          and the splits to load.
    corpus.py check DIR   compares DIR/out/<case>_<split>.f32 (raw
                          little-endian float32, what the plugin yielded,
                          item after item) with NumPy's own reading of the
                          same files, and DIR/out/split_items.json with
                          NumPy's unpickling of the sample's domain splits.
                          Exits 1 listing every mismatch.
"""

import json
import os
import sys

import numpy as np

SPLITS = ["train", "val", "test"]
ROWS = {"train": 7, "val": 3, "test": 2}


def values(dtype, shape, seed):
    """Values that exercise a type: its extremes and negatives for integers,
    large magnitudes and fractions for floats."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        native = dtype.newbyteorder("=")
        info = np.iinfo(native)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=native)
    return rng.standard_normal(shape) * 1000.0


def stable_seed(name):
    return sum(name.encode()) * 7


def npy_cases(root):
    cases = []
    types = [("b", 1), ("i", 1), ("u", 1)]
    types += [(k, s) for k in "iu" for s in (2, 4, 8)]
    types += [("f", s) for s in (2, 4, 8)]
    for kind, size in types:
        orders = ["|"] if size == 1 else ["<", ">"]
        for order in orders:
            dtype = np.dtype(f"{order}{kind}{size}")
            name = f"npy_{kind}{size}_{'be' if order == '>' else 'le'}"
            for i, split in enumerate(SPLITS):
                v = values(dtype, (ROWS[split], 5), stable_seed(name) + i)
                np.save(os.path.join(root, f"{name}_{split}.npy"), v.astype(dtype))
            cases.append({"name": name, "config": {"root": root, "parts": [{"npy": f"{name}_{{split}}.npy"}]}})
    # Fortran order, 2-D and 3-D, and a big-endian 3-D one.
    for name, shape, dtype in [
        ("npy_fortran_2d", (5, 4), "<f8"),
        ("npy_fortran_3d", (4, 2, 3), ">i2"),
    ]:
        for i, split in enumerate(SPLITS):
            v = values(dtype, (ROWS[split],) + shape[1:], 50 + i).astype(dtype)
            a = np.asfortranarray(v)
            assert a.flags.f_contiguous and not a.flags.c_contiguous
            np.save(os.path.join(root, f"{name}_{split}.npy"), a)
        cases.append({"name": name, "config": {"root": root, "parts": [{"npy": f"{name}_{{split}}.npy"}]}})
    # 1-D arrays: one value per item; a column subset of a 2-D one.
    for i, split in enumerate(SPLITS):
        np.save(os.path.join(root, f"npy_1d_{split}.npy"), np.arange(ROWS[split], dtype="<f4") * 0.5 - 1)
    cases.append({"name": "npy_1d", "config": {"root": root, "parts": [{"npy": "npy_1d_{split}.npy"}]}})
    cases.append({
        "name": "npy_columns",
        "config": {"root": root, "parts": [{"npy": "npy_f8_be_{split}.npy", "columns": [4, 0, 2]}]},
        "columns": [4, 0, 2],
        "source": "npy_f8_be",
    })
    return cases


def safetensors_cases(root):
    from safetensors.numpy import save_file

    cases = []
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng(70 + i)
        save_file(
            {
                "latent": rng.standard_normal((ROWS[split], 6)).astype(np.float32),
                "half": rng.standard_normal((ROWS[split], 2, 3)).astype(np.float16),
                "ids": rng.integers(-1000, 1000, size=(ROWS[split],)).astype(np.int64),
            },
            os.path.join(root, f"st_{split}.safetensors"),
        )
    for tensor in ["latent", "half", "ids"]:
        cases.append({
            "name": f"safetensors_{tensor}",
            "config": {"root": root, "parts": [{"safetensors": "st_{split}.safetensors", "tensor": tensor}]},
            "tensor": tensor,
        })
    return cases


def png_cases(root):
    from PIL import Image

    cases = []
    for mode, channels in [("RGB", 3), ("RGBA", 4), ("L", 1), ("RGBA", 3)]:
        name = f"png_{mode.lower()}_{channels}"
        for i, split in enumerate(SPLITS):
            folder = os.path.join(root, name, split)
            os.makedirs(folder, exist_ok=True)
            rng = np.random.default_rng(90 + i)
            for k in range(ROWS[split]):
                shape = (5, 4) if mode == "L" else (5, 4, len(mode))
                Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(
                    os.path.join(folder, f"{k}.png")
                )
        cases.append({
            "name": name,
            "config": {"root": os.path.join(root, name), "parts": [{"images": "{split}", "shape": [channels, 5, 4]}]},
            "mode": mode,
            "channels": channels,
        })
    return cases


def make(root):
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    cases = npy_cases(root) + safetensors_cases(root) + png_cases(root)
    for c in cases:
        c["splits"] = SPLITS
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


def expected(case, split):
    """What NumPy (or Pillow, for images) reads from the case's files, as
    float32 items, one row each."""
    root = case["config"]["root"]
    name = case["name"]
    if name.startswith("npy_"):
        source = case.get("source", name)
        a = np.load(os.path.join(root, f"{source}_{split}.npy"))
        a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)
        if "columns" in case:
            a = a[:, case["columns"]]
        return a.astype(np.float32)
    if name.startswith("safetensors_"):
        from safetensors.numpy import load_file

        a = load_file(os.path.join(root, f"st_{split}.safetensors"))[case["tensor"]]
        return (a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)).astype(np.float32)
    from PIL import Image

    rows = []
    for k in range(ROWS[split]):
        img = Image.open(os.path.join(root, split, f"{k}.png"))
        if case["channels"] == 3:
            img = img.convert("RGB")
        a = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        rows.append(a.reshape(-1))
    return np.stack(rows)


def check(root):
    with open(os.path.join(root, "cases.json")) as f:
        cases = json.load(f)
    problems, compared = [], 0
    for case in cases:
        for split in case["splits"]:
            want = expected(case, split)
            path = os.path.join(root, "out", f"{case['name']}_{split}.f32")
            got = np.fromfile(path, dtype="<f4")
            if got.size != want.size:
                problems.append(f"{case['name']} {split}: {got.size} values, NumPy reads {want.size}")
                continue
            got = got.reshape(want.shape)
            if not np.array_equal(got, want, equal_nan=True):
                bad = np.argwhere(~((got == want) | (np.isnan(got) & np.isnan(want))))[0]
                problems.append(
                    f"{case['name']} {split}: item {bad[0]} value {bad[1]}: plugin {got[tuple(bad)]!r}, NumPy {want[tuple(bad)]!r}"
                )
            compared += want.size
    split_file = os.path.join(root, "out", "split_items.json")
    if os.path.exists(split_file):
        with open(split_file) as f:
            got = json.load(f)
        for entry in got:
            d = np.load(entry["file"], allow_pickle=True).item()
            want = sorted(int(i) for i in d[frozenset(entry["domains"])])
            if sorted(entry["items"]) != want:
                problems.append(f"{entry['file']} {entry['domains']}: {entry['items']} vs NumPy {want}")
            compared += len(want)
    for p in problems:
        print(p)
    print(f"compared {compared} values of {len(cases)} cases with NumPy's reading; {len(problems)} mismatches")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](sys.argv[2])
