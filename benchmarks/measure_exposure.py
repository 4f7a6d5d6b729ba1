"""Benchmark: `irlhf measure exposure` against a plain Hugging Face generate-and-score loop.

Issue 15's setting: a teacher of irlhf's Shakespeare-teacher shape (3 layers, 192 wide, BPE
vocabulary 2,000) against a 2 x 64 student, 256 prompts (8 tokens each) x 128 new tokens, one
continuation per prompt from each, on 2 CPU threads. Targets: irlhf <= 60 s; irlhf >= 2x faster
than the peer. The weights are random (timing does not depend on them; the teacher's context
is widened to 136 positions so that 8 + 128 tokens fit), so no teacher needs training first.

The peer computes the same numbers the plain way: `model.generate` (sampling, temperature 1)
for the expert's and the student's continuations, then one Hugging Face forward of each model
per batch, KL(expert || student) per step in float64, eps_<=l, R_<=l and AccErr_<=l. irlhf does
more (bootstrap intervals, NLL-oracle, figures, report, parquet files); its time is the whole
`measure_exposure` call. Each repeat runs both sides (the order alternates); the median over
repeats is reported, and a row `measure_exposure` is written into benchmarks/results.json.

    .venv/bin/python benchmarks/measure_exposure.py [--repeats 3] [--threads 2]

benchmarks/run.py keeps this row when it rewrites results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from irlhf.measure import measure_exposure
from irlhf.policies.causal_lm import CausalLMPolicy

HERE = Path(__file__).resolve().parent
VOCAB, PROMPT, NEW, N_PROMPTS, BATCH = 2000, 8, 128, 256, 64


def save(policy: CausalLMPolicy, path: Path) -> Path:
    words = [f"w{i}" for i in range(VOCAB)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    policy.save(path)
    PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(path)
    return path


def hf_loop(expert: CausalLMPolicy, model: CausalLMPolicy, prompts: torch.Tensor, seed: int):
    """eps_<=l, R_<=l, AccErr_<=l by generate + one forward per model and batch."""
    torch.manual_seed(seed)  # generate draws from the global RNG
    per_source = []
    for generator_model in (expert.model, model.model):
        kl_rows = []
        for start in range(0, len(prompts), BATCH):
            chunk = prompts[start : start + BATCH]
            with torch.inference_mode():
                seqs = generator_model.generate(
                    chunk, attention_mask=torch.ones_like(chunk), do_sample=True, top_k=0,
                    max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0,
                )  # fmt: skip
                log_e = expert.model(seqs).logits[:, PROMPT - 1 : -1].double().log_softmax(-1)
                log_m = model.model(seqs).logits[:, PROMPT - 1 : -1].double().log_softmax(-1)
            kl_rows.append((log_e.exp() * (log_e - log_m)).sum(-1))
        per_source.append(torch.cat(kl_rows).mean(0).numpy())
    lengths = np.arange(1, NEW + 1)
    eps, R = np.cumsum(per_source[0]) / lengths, np.cumsum(per_source[1])
    return eps, R, R / eps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = CausalLMPolicy.tiny(VOCAB, n_layer=3, n_embd=192, n_head=4, max_length=136, seed=1)
    student = CausalLMPolicy.tiny(VOCAB, n_layer=2, n_embd=64, n_head=4, max_length=136, seed=2)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(VOCAB, (N_PROMPTS, PROMPT), generator=g)
    texts = [" ".join(f"w{i}" for i in row) for row in prompts.tolist()]
    load_start = os.getloadavg()
    mine, peer, last = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        expert_dir, model_dir = save(teacher, Path(tmp) / "t"), save(student, Path(tmp) / "s")
        expert, model = (CausalLMPolicy.from_pretrained(d).eval() for d in (expert_dir, model_dir))
        for repeat in range(args.repeats):
            for side in ("irlhf", "peer") if repeat % 2 == 0 else ("peer", "irlhf"):
                start = time.perf_counter()
                if side == "irlhf":
                    last["irlhf"] = measure_exposure(
                        expert_dir, model_dir, texts, Path(tmp) / f"out{repeat}",
                        max_new_tokens=NEW, batch_size=BATCH, device="cpu", seed=repeat,
                    )  # fmt: skip
                    mine.append(time.perf_counter() - start)
                else:
                    last["peer"] = hf_loop(expert, model, prompts, repeat)
                    peer.append(time.perf_counter() - start)
                print(f"repeat {repeat} {side}: {(mine if side == 'irlhf' else peer)[-1]:.1f} s")
    at_L = {r["quantity"]: r["value"] for r in last["irlhf"]["at_L"] if r["decoding"] == "sample"}
    eps, R, acc = (float(x[-1]) for x in last["peer"])
    ours, theirs = statistics.median(mine), statistics.median(peer)
    print(f"measure exposure, teacher 3x192 vs student 2x64, {N_PROMPTS} prompts x {NEW} tokens")
    print(f"  irlhf measure_exposure   {ours:6.1f} s   (target <= 60 s)")
    print(f"  HF generate + score loop {theirs:6.1f} s")
    print(f"  speed-up                 {theirs / ours:6.2f}x  (target >= 2x)")
    print(
        f"  at L: eps {at_L['eps']:.4f} vs {eps:.4f}, R {at_L['R']:.3f} vs {R:.3f}, AccErr "
        f"{at_L['acc_err']:.2f} vs {acc:.2f} (irlhf vs peer, independent samples)"
    )

    def series(values: list[float]) -> dict:
        return {"median": statistics.median(values), "min": min(values), "max": max(values),
                "values": values, "peak_rss_mib": None}  # fmt: skip

    row = {
        "size": "teacher 3x192 vs student 2x64",
        "row": "measure_exposure",
        "label": f"measure exposure ({N_PROMPTS} prompts x {NEW} tokens)",
        "peer": "Hugging Face generate + forward scoring loop",
        "unit": "s",
        "irlhf": series(mine),
        "peer_result": series(peer),
        "ratio_irlhf_over_peer": ours / theirs,
        "speedup": theirs / ours,
        "seconds": ours,
        "target_seconds": 60.0,
        "target_speedup": 2.0,
        "threads": args.threads,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "repeats": args.repeats,
    }
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    results["rows"] = [r for r in results["rows"] if r.get("row") != "measure_exposure"] + [row]
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote the measure_exposure row into {path}")


if __name__ == "__main__":
    main()
