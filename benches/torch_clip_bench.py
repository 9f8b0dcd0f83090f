#!/usr/bin/env python3
"""PyTorch / transformers anchor for the CLIP towers on the CPU (issue 20).

Embeds the same token ids and the same preprocessed images that `query_batching_bench` gives
Glimpse's towers, with `transformers.CLIPModel` in f32 eager mode on the same cores, and prints
one JSON object: milliseconds per text query at batch 1, per pass of the whole text batch
(padded to its longest query with an attention mask, as `CLIPProcessor(padding=True)` does),
and images per second at each image batch size.

It is started by `query_batching_bench --torch PYTHON` with a request file written by that
run; it can be run by hand too:

    python benches/torch_clip_bench.py --model DIR --request REQUEST.json [--threads 2]
        [--dynamic-int8]

`--dynamic-int8` first applies PyTorch's dynamic quantization to every `nn.Linear`
(`torch.ao.quantization.quantize_dynamic`, qint8 weights, activations quantized per call
with one scale and zero point per call, on fbgemm / x86 kernels): PyTorch's nearest
counterpart of Glimpse's `--device cpu-w8a8`, which scales each row of activations alone.

REQUEST.json: {"texts": {"short": [[ids...], ...], ...}, "pixels": "FILE", "images": N,
"image_batches": [1, 32], "reps": 9}. FILE holds N images as little-endian f32, 3x224x224 each,
channel-major (Glimpse's preprocessing output).
"""

import argparse
import json
import statistics
import sys
import time


def median_ms(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--request", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dynamic-int8", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch
    from transformers import CLIPModel

    torch.set_num_threads(args.threads)
    with open(args.request) as f:
        req = json.load(f)
    reps = int(req.get("reps", 9))
    model = CLIPModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    if args.dynamic_int8:
        import warnings

        with warnings.catch_warnings():
            # The eager quantization API is deprecated in favour of torchao, but still ships
            # and still runs fbgemm's VNNI kernels.
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear}, dtype=torch.qint8
            )
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "precision": "dynamic int8 Linear (quantize_dynamic, %s)" % torch.backends.quantized.engine
        if args.dynamic_int8
        else "f32",
        "text": {},
        "image": {},
    }

    def text_batch(seqs):
        longest = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), longest), dtype=torch.long)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    with torch.inference_mode():
        for name, seqs in req["texts"].items():
            singles = [text_batch([s]) for s in seqs]
            whole = text_batch(seqs)
            for ids, mask in singles[:3]:
                model.get_text_features(input_ids=ids, attention_mask=mask)
            model.get_text_features(input_ids=whole[0], attention_mask=whole[1])
            k = [0]

            def one():
                ids, mask = singles[k[0] % len(singles)]
                k[0] += 1
                model.get_text_features(input_ids=ids, attention_mask=mask)

            out["text"][name] = {
                "batch1_ms_per_query": median_ms(one, max(reps, len(singles))),
                "batch": len(seqs),
                "batch_ms_per_pass": median_ms(
                    lambda: model.get_text_features(input_ids=whole[0], attention_mask=whole[1]),
                    reps,
                ),
            }

        n = int(req["images"])
        pixels = np.fromfile(req["pixels"], dtype="<f4").reshape(n, 3, 224, 224)
        pixels = torch.from_numpy(pixels.copy())
        for b in req["image_batches"]:
            batch = pixels[[i % n for i in range(b)]]
            model.get_image_features(pixel_values=batch)
            ms = median_ms(lambda: model.get_image_features(pixel_values=batch), max(3, reps // 2 if b > 8 else reps))
            out["image"][str(b)] = {"ms_per_batch": ms, "images_per_s": b / ms * 1e3}
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
