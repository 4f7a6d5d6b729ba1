"""The peer: TRL 1.16's trainers (and `model.generate`) on the same models and data.

TRL's trainers want text and a tokenizer. The token ids of the data are written as words
"t0".."t511" and read back by a word-level tokenizer whose ids equal the model's token ids (plus
"<eos>" = 512, outside the model's vocabulary, as TRL's end-of-sequence and padding token, so a
random model never stops early). TRL tokenizes data sets once, when a trainer is built, which
is not timed; per step it collates, runs the model, computes its loss and metrics, and steps.

Configuration, chosen so that both sides do the same arithmetic: fp32 (`bf16=False`; TRL's
default on CPU is bf16 autocast), no gradient checkpointing (TRL's default is on), constant
learning rate, gradient clipping at 1.0 (as irlhf), no logging or checkpoints, `use_cpu=True`.
The "SFT, TRL defaults" row shows what TRL does with its own defaults instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

import torch
from common import (
    PROMPT,
    VOCAB,
    Size,
    Workload,
    comparisons,
    hf_copy,
    lower_half_reward,
    random_tokens,
    sequences,
)
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2ForSequenceClassification, PreTrainedTokenizerFast
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from irlhf.policies.causal_lm import CausalLMPolicy

Run = Callable[[int], object]
EOS = "<eos>"
_SCRATCH = tempfile.TemporaryDirectory(prefix="irlhf-bench-")  # removed when the process exits


def tokenizer(eos: str = EOS) -> PreTrainedTokenizerFast:
    """Word-level: "t<i>" <-> id i for i < 512, "<eos>" = 512."""
    vocab = {f"t{i}": i for i in range(VOCAB)} | {EOS: VOCAB}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=eos, pad_token=EOS, unk_token=EOS
    )


def words(ids: torch.Tensor) -> str:
    return " ".join(f"t{i}" for i in ids.tolist())


def common_args(work: Workload, fair: bool = True) -> dict:
    args = {
        "output_dir": tempfile.mkdtemp(dir=_SCRATCH.name),
        "use_cpu": True,
        "max_steps": 1,
        "learning_rate": work.lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    if fair:
        args |= {"bf16": False, "gradient_checkpointing": False}
    return args


def _runner(trainer) -> Run:
    trainer.remove_callback(PrinterCallback)  # the end-of-training summary dict
    trainer.remove_callback(ProgressCallback)

    def run(steps: int) -> object:
        trainer.args.max_steps = steps
        return trainer.train()

    return run


def sft(policy: CausalLMPolicy, size: Size, work: Workload, fair: bool = True) -> Run:
    from trl import SFTConfig, SFTTrainer

    seqs = sequences(work.dataset, size.completion, seed=1)
    data = Dataset.from_dict(
        {
            "input_ids": seqs.tokens.tolist(),
            "completion_mask": seqs.completion_mask.long().tolist(),
        }
    )
    args = SFTConfig(
        per_device_train_batch_size=work.batch,
        completion_only_loss=True,
        max_length=None,
        **common_args(work, fair),
    )
    trainer = SFTTrainer(
        model=hf_copy(policy), args=args, train_dataset=data, processing_class=tokenizer()
    )
    return _runner(trainer)


def reward_model(policy: CausalLMPolicy, size: Size, work: Workload) -> Run:
    from trl import RewardConfig, RewardTrainer

    pairs = comparisons(work.dataset, size.completion, seed=2)
    data = Dataset.from_dict(
        {"chosen_ids": pairs.chosen.tokens.tolist(), "rejected_ids": pairs.rejected.tokens.tolist()}
    )
    model = GPT2ForSequenceClassification(
        policy.model.config.__class__(**{**policy.model.config.to_dict(), "num_labels": 1})
    )
    model.transformer.load_state_dict(policy.model.transformer.state_dict())
    model.config.pad_token_id = VOCAB  # never present: the score is read at the last token
    args = RewardConfig(
        per_device_train_batch_size=work.batch, max_length=None, **common_args(work)
    )
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer()
    )
    return _runner(trainer)


def dpo(policy: CausalLMPolicy, size: Size, work: Workload) -> Run:
    """Reference log-probs precomputed once (`precompute_ref_log_probs`), as irlhf scores its
    reference once before training. The completions end in t511, declared TRL's end token, so
    TRL appends nothing and both sides train on identical sequences."""
    from trl import DPOConfig, DPOTrainer

    pairs = comparisons(work.dataset, size.completion, seed=2)
    data = Dataset.from_dict(
        {
            "prompt": [words(t[:PROMPT]) for t in pairs.chosen.tokens],
            "chosen": [" " + words(t[PROMPT:]) for t in pairs.chosen.tokens],
            "rejected": [" " + words(t[PROMPT:]) for t in pairs.rejected.tokens],
        }
    )
    args = DPOConfig(
        per_device_train_batch_size=work.batch,
        beta=work.dpo_beta,
        precompute_ref_log_probs=True,
        max_length=None,
        **common_args(work),
    )
    trainer = DPOTrainer(
        model=hf_copy(policy),
        args=args,
        train_dataset=data,
        processing_class=tokenizer(eos=f"t{VOCAB - 1}"),
    )
    return _runner(trainer)


def rloo(policy: CausalLMPolicy, size: Size, work: Workload) -> Run:
    """k = 4 completions per prompt sampled from the full softmax (top_k=0, top_p=1, T=1),
    a k1 KL penalty beta = 0.05 to a frozen copy of the start, one optimiser step per batch."""
    from trl import RLOOConfig, RLOOTrainer

    pool = random_tokens(work.dataset, PROMPT, seed=3)
    data = Dataset.from_dict({"prompt": [words(p) for p in pool]})

    def reward(completion_ids: list[list[int]], **_kwargs) -> list[float]:
        ids = torch.tensor(completion_ids)
        return lower_half_reward(ids).tolist()

    args = RLOOConfig(
        per_device_train_batch_size=work.rloo_prompts * work.rloo_samples,
        num_generations=work.rloo_samples,
        max_completion_length=size.completion,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=work.rloo_kl,
        num_iterations=1,
        **common_args(work),
    )
    # RLOOTrainer builds its reference by loading the model's checkpoint again: give it one
    model = hf_copy(policy)
    path = tempfile.mkdtemp(dir=_SCRATCH.name)
    model.save_pretrained(path)
    model.config._name_or_path = path
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=data,
        processing_class=tokenizer(),
    )
    return _runner(trainer)


class PromptCollator:
    """GKD's inputs from token ids, as its ChatML collator gives them: a prompt + completion
    with labels on the completion (TRL normalises the loss by the number of these labels, which
    equals the number of completion tokens of the student's rollout that replaces them when
    lmbda = 1), and the prompt alone (generation starts from it)."""

    def __call__(self, examples: list[dict]) -> dict:
        prompts = torch.tensor([e["prompt_ids"] for e in examples])
        tokens = torch.cat([prompts, torch.tensor([e["completion_ids"] for e in examples])], 1)
        labels = tokens.clone()
        labels[:, : prompts.shape[1]] = -100
        return {
            "input_ids": tokens,
            "attention_mask": torch.ones_like(tokens),
            "labels": labels,
            "prompts": prompts,
            "prompt_attention_mask": torch.ones_like(prompts),
        }


def distillation(policy: CausalLMPolicy, size: Size, work: Workload, teacher) -> Run:
    """GKDTrainer with lmbda = 1 (always the student's own rollouts), beta = 0.5,
    temperature 1, `max_new_tokens` = the completion length."""
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    pool = random_tokens(work.dataset, PROMPT, seed=3)
    demos = random_tokens(work.dataset, size.completion, seed=5)
    data = Dataset.from_dict({"prompt_ids": pool.tolist(), "completion_ids": demos.tolist()})
    args = GKDConfig(
        per_device_train_batch_size=work.batch,
        lmbda=1.0,
        beta=work.jsd_beta,
        temperature=1.0,
        max_new_tokens=size.completion,
        max_length=None,
        **common_args(work),
    )
    trainer = GKDTrainer(
        model=hf_copy(policy),
        teacher_model=hf_copy(teacher),
        args=args,
        train_dataset=data,
        processing_class=tokenizer(),
        data_collator=PromptCollator(),
    )
    return _runner(trainer)


def sampler(policy: CausalLMPolicy, size: Size, work: Workload) -> Callable[[], int]:
    """`model.generate` with its KV cache, sampling from the full softmax."""
    model = hf_copy(policy).eval()
    prompts = random_tokens(work.sampler_batch, PROMPT, seed=4)
    mask = torch.ones_like(prompts)
    torch.manual_seed(0)  # generate draws from the global RNG

    def run() -> int:
        out = model.generate(
            input_ids=prompts,
            attention_mask=mask,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=size.sample_tokens,
            use_cache=True,
            pad_token_id=0,
        )
        return (out.shape[1] - PROMPT) * out.shape[0]

    return run
