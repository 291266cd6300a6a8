"""Stage 7 — train: causal-LM fine-tuning on a selection's training text.

Reads a run directory (its selection, rendered with the run's template), a table with a `text` column, a
selection with `instruction`/`output` (rendered with the paper's template) or a `datasets` directory; writes a model
directory that `from_pretrained` and `koquality eval` load: weights (or a LoRA adapter), tokenizer,
`koquality-train.json` (the resolved configuration, data and step counts, versions) and `loss.jsonl` (one
line per logged step), plus `checkpoint-N/` folders that `--resume` continues from.

The `paper` preset is the KoQuality paper's run (its run_clm.py, from KoAlpaca): the texts are tokenised
as they are, concatenated with no separator and cut into 1,024-token blocks (the remainder dropped);
lr 5e-5, linear decay with no warm-up, Adam β=(0.9, 0.999) ε=1e-8 with no weight decay, batch 4 per
device, 2 epochs, seed 42. The paper ran 4 GPUs with gradient accumulation 16, a global batch of 256, so
the preset fixes the global batch and derives the accumulation from the number of processes. Mixed
precision is bf16 where the GPU has it, fp16 on older GPUs, fp32 on CPU.

The `paper-script` preset is what the original's training script actually ran (nayohan/KoQuality
train_llm/train_A100_5.8b.sh with ds_zero3-nooffload.json and run_clm.py), where it departs from the README's
stated settings: `--do_eval` without a validation file, so run_clm held out the first 5 % of the selection
(`train[:5%]`, rounded to the closest row) and evaluated on it every step (`--eval_steps=1`, at most its first
100 blocks, `--max_eval_samples=100`; loss and next-token accuracy); the DeepSpeed config's `WarmupLR`
scheduler replaced the Trainer's linear decay: filled with the Trainer's "auto" values (min lr 0, max lr 5e-5,
0 warm-up steps, which DeepSpeed raises to 2), DeepSpeed 0.9.5 (the original's requirements.txt) leaves the
first applied optimizer step at the optimizer's own 5e-5, runs the second at 0 (log warm-up: log 1 / log 2)
and every later one at 5e-5 (`scheduler: warmup_lr` here, an exact copy; steps skipped by fp16 overflow do
not count, in DeepSpeed as in the Trainer); per-device batch 4 × accumulation 4 × 4 GPUs = a global batch of
64; `--fp16` (`precision: auto-fp16`: fp16 on any GPU, fp32 on CPU, which has no fp16 training). Not copied:
DeepSpeed itself (add `--deepspeed zero3`) and `--torch_dtype=float16` (fp16 weights under DeepSpeed's fp16
optimizer; here fp32 weights with fp16 autocast).
Multi-GPU runs go through `torchrun`/`accelerate launch` (`-m koquality train …`); the Trainer does DDP or
DeepSpeed from there, and only the main process writes koquality's files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import __version__, progress
from .cache import versions
from .errors import KoqualityError, missing_extra
from .recipe import TrainConfig
from .tables import as_table, read_table, write_json
from .torch_utils import from_pretrained

CONFIG_FILE = "koquality-train.json"
LOSS_FILE = "loss.jsonl"
EVAL_FILE = "eval_loss.jsonl"  # with validation: one line per evaluation
DEEPSPEED_CONFIGS = {"zero3": "ds_zero3.json", "zero3-offload": "ds_zero3_offload.json"}


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # One GPU, a model the paper fine-tuned fully: LoRA adapters, a higher rate as LoRA needs, global batch 64.
    "lora": {"lora": True, "lr": 2e-4, "global_batch_size": 64, "gradient_checkpointing": True},
    # The original's train_A100_5.8b.sh + ds_zero3-nooffload.json (see the module docstring), not its README.
    "paper-script": {"global_batch_size": 64, "scheduler": "warmup_lr", "precision": "auto-fp16",
                     "validation": 0.05, "eval_steps": 1, "eval_sequences": 100},
}


def train_config(preset: str = "paper", base: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """A preset, then `base` (settings from a file), then the options the user set (None means not set).
    `grad_accum` replaces the global batch."""
    if preset not in PRESETS:
        raise KoqualityError(f"--preset {preset}: expected one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **(base or {}), **{k: v for k, v in overrides.items() if v is not None}}
    if values.get("grad_accum") is not None and overrides.get("global_batch_size") is None:
        values["global_batch_size"] = None
    try:
        return TrainConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        raise KoqualityError(f"train option {'.'.join(map(str, first['loc'])) or ''}: {first['msg']}") from None


def load_train_config(path: str | Path) -> dict[str, Any]:
    """Train settings from a recipe (.yaml, its `train:` section) or a JSON object of train keys."""
    path = Path(path)
    if not path.is_file():
        raise KoqualityError(f"--config {path}: no such file")
    if path.suffix in (".yaml", ".yml"):
        from .recipe import load_recipe

        recipe = load_recipe(path)
        if recipe.train is None:
            raise KoqualityError(f"--config {path}: the recipe has no train: section")
        return recipe.train.model_dump(exclude_unset=True)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KoqualityError(f"--config {path}: not JSON or a recipe .yaml ({e})") from None
    if not isinstance(data, dict):
        raise KoqualityError(f"--config {path}: expected a JSON object of train settings")
    return data


def deepspeed_config(name_or_path: str) -> Path:
    """`zero3` / `zero3-offload` are the configs shipped in koquality/recipes; anything else is a file."""
    if name_or_path in DEEPSPEED_CONFIGS:
        return Path(str(resources.files("koquality") / "recipes" / DEEPSPEED_CONFIGS[name_or_path]))
    path = Path(name_or_path)
    if not path.is_file():
        raise KoqualityError(f"--deepspeed {name_or_path}: no such file (or use one of: {', '.join(DEEPSPEED_CONFIGS)})")
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KoqualityError(f"--deepspeed {path}: not a JSON file ({e})") from None
    return path


def training_texts(source: str | Path, template: str | None = None) -> tuple[list[str], str | None]:
    """The texts to train on, from whatever a user points at (see the module docstring). A run directory
    gives its selection rendered with the run's own template; other rows without `text` get `template`
    (default: the paper's). Returns the texts and the template used (None: the `text` column as given)."""
    from .export import render

    path = Path(source)
    if path.is_dir() and (path / "manifest.json").exists():
        from .recipe import load_recipe

        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        template = template or load_recipe(path / "recipe.yaml").export.template
        path = path / manifest["files"]["selection"]
    if path.is_dir():
        if not (path / "dataset_info.json").exists() and not (path / "state.json").exists():
            raise KoqualityError(f"{path}: a directory that is neither a koquality run nor a saved `datasets` dataset")
        from datasets import load_from_disk

        table = as_table(load_from_disk(str(path)))
    else:
        table = read_table(path)
    if "text" not in table.column_names:
        if not {"instruction", "output"} <= set(table.column_names):
            raise KoqualityError(f"{source}: no `text` column and no `instruction`/`output` columns to render "
                                 f"(found: {', '.join(table.column_names)})")
        template = template or "paper"
        table = render(table, template)
    else:
        template = None
    texts = [t for t in table.column("text").to_pylist() if t and t.strip()]
    if not texts:
        raise KoqualityError(f"{source}: no non-empty training texts")
    return texts, template


def token_blocks(token_rows: list[list[int]], block_size: int) -> list[list[int]]:
    """run_clm's group_texts: concatenate every row and cut into full blocks, dropping the remainder."""
    flat = list(chain.from_iterable(token_rows))
    usable = len(flat) // block_size * block_size
    return [flat[i:i + block_size] for i in range(0, usable, block_size)]


def validation_count(texts: int, share: float) -> int:
    """How many of the first texts run_clm's `train[:P%]` held out: `datasets` rounds P % of the rows to the
    closest integer (Python's round, so 2.5 → 2)."""
    percent = round(share * 100, 9)  # 0.07 × 100 is 7.000000000000001: the percentage as written
    return int(round(percent * texts / 100.0)) if share else 0


def validation_sequences(token_rows: list[list[int]], config: TrainConfig) -> list[list[int]]:
    """The held-out texts as evaluation sequences, packed as the training texts; with `packing: blocks` a
    validation shorter than one block is one shorter sequence (run_clm's group_texts keeps such a batch whole)."""
    if config.packing == "blocks":
        rows = token_blocks(token_rows, config.block_size)
        flat = list(chain.from_iterable(token_rows))
        if not rows and len(flat) >= 2:
            rows = [flat]
    else:
        rows = [r[:config.block_size] for r in token_rows if len(r) >= 2]
    return rows[:config.eval_sequences] if config.eval_sequences else rows


def warmup_lr_factor(step: int, warmup_steps: int = 0) -> float:
    """`scheduler: warmup_lr`: DeepSpeed 0.9.5's WarmupLR (warmup_type log, warmup_min_lr 0), as a factor of the lr
    for the 0-based optimizer step `step`. Its constructor leaves the optimizer's lr alone (DeepSpeed ≥ 0.15.3
    sets the minimum there instead), the engine steps it after every applied step, and it warms up over
    max(2, warmup_steps) steps: for 0 (the original's) to 2 warm-up steps the factors are 1, 0, 1, 1, …"""
    warmup = max(2, warmup_steps)
    if step == 0:
        return 1.0
    return math.log(step) / math.log(warmup) if step - 1 < warmup else 1.0


def _trainer_class(config: TrainConfig):
    """The Trainer, with `scheduler: warmup_lr` in place of the nearest transformers schedule."""
    from transformers import Trainer

    if config.scheduler != "warmup_lr":
        return Trainer

    class WarmupLRTrainer(Trainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                from functools import partial

                from torch.optim.lr_scheduler import LambdaLR

                self.lr_scheduler = LambdaLR(optimizer or self.optimizer,
                                             partial(warmup_lr_factor, warmup_steps=config.warmup_steps))
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return WarmupLRTrainer


def _next_token_accuracy():
    """run_clm's evaluation metric: the share of next tokens the model's argmax predicts (padding left out)."""
    import numpy as np

    def preprocess(logits, labels):
        return (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=-1)

    def metrics(eval_preds):
        preds, labels = eval_preds
        preds, labels = np.asarray(preds)[:, :-1].reshape(-1), np.asarray(labels)[:, 1:].reshape(-1)
        scored = labels != -100
        return {"accuracy": float((preds[scored] == labels[scored]).mean()) if scored.any() else float("nan")}

    return preprocess, metrics


def pad_batch(pad_id: int):
    """Collator for `packing: none`: right-pad, and keep padding out of the loss by the attention mask
    (not by the pad id, which is EOS for GPT-NeoX and may be a real token)."""
    import torch

    from .torch_utils import right_padded

    def collate(features: list[dict[str, list[int]]]) -> dict[str, Any]:
        ids, mask = right_padded(torch, [f["input_ids"] for f in features], pad_id, "cpu")
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def _precision(torch, precision: str) -> str:
    if precision == "auto-fp16":  # the original script's --fp16 on any GPU; CPUs do not train in fp16
        return "fp16" if torch.cuda.is_available() else "fp32"
    if precision == "auto":
        if not torch.cuda.is_available():
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise KoqualityError(f"--precision {precision} needs a CUDA GPU (use --precision fp32 on CPU)")
    return precision


def _progress_callback():
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """koquality's progress bar (steps/s, ETA) in place of the Trainer's tqdm, on the main process only."""

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self._stage = progress.stage("train", state.max_steps, unit="steps")
                self._advance = self._stage.__enter__()
                self._advance(state.global_step)  # a resumed run starts where it stopped

        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self._advance(1)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self._stage.__exit__(None, None, None)

    return Progress()


def _loss_log_callback(path: Path):
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        """Every logged step appended to loss.jsonl as it happens, so a crashed run keeps its curve; evaluations
        go to eval_loss.jsonl beside it."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and ("loss" in logs or "eval_loss" in logs):
                record = {"step": state.global_step, "epoch": state.epoch, **logs}
                with open(path if "loss" in logs else path.with_name(EVAL_FILE), "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")

    return LossLog()


FEW_STEPS = 20


def optimizer_steps(sequences: int, resolved: dict[str, Any], config: TrainConfig) -> int:
    """The Trainer's count: batches per process per epoch, accumulated, times the epochs (or max_steps)."""
    if config.max_steps:
        return config.max_steps
    batches = math.ceil(sequences / (config.batch_size * resolved["world_size"]))
    return math.ceil(batches / resolved["grad_accum"]) * math.ceil(config.epochs)


def _warn_few_steps(sequences: int, resolved: dict[str, Any], config: TrainConfig) -> None:
    """A selection of 16 sequences against the paper's global batch of 256 trains 2 steps and says nothing:
    say it, with the option that fixes it."""
    steps = optimizer_steps(sequences, resolved, config)
    if steps < FEW_STEPS and is_main_process():
        suggested = max(1, sequences * math.ceil(config.epochs) // FEW_STEPS)
        logging.getLogger("koquality").warning(
            "training takes only %d optimizer step(s): %d sequences, global batch %d; too few to learn from. "
            "Use a smaller --global-batch-size (e.g. %d) or more data", steps, sequences,
            resolved["global_batch_size"], suggested)


def is_main_process() -> bool:
    """Rank 0 under torchrun/accelerate (before the Trainer has set up distributed state), or a plain run."""
    return int(os.environ.get("RANK", "0")) == 0


# Files by which a directory is known as a koquality training output (the run pipeline writes the last two).
OWN_FILES = (CONFIG_FILE, LOSS_FILE, EVAL_FILE, "koquality-key.txt", "train-config.json")


def _check_output(output: Path, resume: bool, force: bool) -> None:
    if output.exists() and not output.is_dir():
        raise KoqualityError(f"--output {output}: exists and is a file (a trained model is a directory)")
    existing = output / CONFIG_FILE
    checkpoints = sorted(output.glob("checkpoint-*")) if output.is_dir() else []
    if output.is_dir() and any(output.iterdir()) and not checkpoints and not any((output / f).exists() for f in OWN_FILES):
        raise KoqualityError(f"--output {output}: not empty and not a koquality training run; the model's files "
                             "(config.json, weights, tokenizer) would overwrite what is there: choose a new or empty directory")
    if resume:
        if not checkpoints:
            raise KoqualityError(f"--resume: {output} has no checkpoint-N folder to resume from")
        return
    if (existing.exists() or checkpoints) and not force:
        raise KoqualityError(f"{output} already holds a training run; use --resume to continue it or --force to start over")
    if force and is_main_process():
        import shutil

        for stale in [existing, output / LOSS_FILE, output / EVAL_FILE]:
            stale.unlink(missing_ok=True)
        for checkpoint in checkpoints:
            shutil.rmtree(checkpoint, ignore_errors=True)


def train(source: str | Path, output: str | Path, config: TrainConfig, resume: bool = False, force: bool = False,
          template: str | None = None, callbacks: list | None = None) -> dict[str, Any]:
    """Fine-tune `config.model` on the training text at `source`; returns what koquality-train.json holds."""
    if not config.model:
        raise KoqualityError("train: no model given (--model NAME_OR_PATH, e.g. EleutherAI/polyglot-ko-5.8b)")
    try:
        import torch
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise missing_extra("koquality train", "train") from None
    output = Path(output)
    _check_output(output, resume, force)
    texts, template = training_texts(source, template)
    hf_logging.disable_progress_bar()  # koquality's own bar is the one shown
    try:
        return _train(torch, texts, template, source, output, config, resume, callbacks or [])
    finally:
        hf_logging.enable_progress_bar()


def _train(torch, texts, template, source, output: Path, config: TrainConfig, resume: bool, callbacks: list) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint

    load = {"revision": config.revision, "trust_remote_code": config.trust_remote_code}
    tokenizer = from_pretrained(AutoTokenizer, config.model, "a tokenizer", **load)
    token_rows = tokenizer(texts, add_special_tokens=True)["input_ids"]
    if config.eos:
        if tokenizer.eos_token_id is None:
            raise KoqualityError(f"--eos: the tokenizer of {config.model} has no EOS token")
        token_rows = [row + [tokenizer.eos_token_id] for row in token_rows]
    held_out = validation_count(len(texts), config.validation)  # the first texts, as run_clm's train[:P%]
    eval_rows = validation_sequences(token_rows[:held_out], config) if held_out else []
    texts, token_rows = texts[held_out:], token_rows[held_out:]
    if not texts:
        raise KoqualityError(f"{source}: no texts left for training after holding out {held_out} for validation")
    if config.packing == "blocks":
        rows = token_blocks(token_rows, config.block_size)
        if not rows:
            raise KoqualityError(f"{source}: {sum(map(len, token_rows)):,} tokens in all, fewer than one block of "
                                 f"{config.block_size} (use a smaller --block-size or --packing none)")
        features = [{"input_ids": r, "attention_mask": [1] * len(r), "labels": r} for r in rows]
        collator = default_data_collator
    else:
        rows = [r[:config.block_size] for r in token_rows if len(r) >= 2]
        features = [{"input_ids": r} for r in rows]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        collator = pad_batch(pad_id if pad_id is not None else 0)

    # before the model: under DeepSpeed ZeRO-3 the arguments switch on partitioned loading (zero.Init), so no
    # process ever holds the whole fp32 model
    args, resolved = training_arguments(torch, config, output, evaluate=bool(eval_rows))
    _warn_few_steps(len(features), resolved, config)
    checkpoint = get_last_checkpoint(str(output)) if resume else None
    # transformers 5 renames some weights on load (GPT-NeoX embed_out → lm_head) but the Trainer's resume
    # loads a checkpoint's tensors by name, so a full-weight model is loaded from the checkpoint here and the
    # Trainer's copy (which then misses the renamed tensors) changes nothing. Adapters and DeepSpeed states
    # are restored by peft / DeepSpeed themselves.
    weights = checkpoint if checkpoint and not config.lora and not config.deepspeed else config.model
    model = from_pretrained(AutoModelForCausalLM, weights, "a causal LM", **load)
    positions = getattr(model.config, "max_position_embeddings", None)
    if config.packing == "blocks" and positions and config.block_size > positions:
        raise KoqualityError(f"--block-size {config.block_size} is longer than {config.model}'s {positions} positions")
    if config.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise missing_extra("koquality train --lora", "train") from None
        model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                                 target_modules=config.lora_target, task_type="CAUSAL_LM"))

    output.mkdir(parents=True, exist_ok=True)
    evaluation = {}
    if eval_rows:
        preprocess, metrics = _next_token_accuracy()
        eval_features = ([{"input_ids": r, "attention_mask": [1] * len(r), "labels": r} for r in eval_rows]
                         if config.packing == "blocks" else [{"input_ids": r} for r in eval_rows])
        evaluation = {"eval_dataset": eval_features, "compute_metrics": metrics, "preprocess_logits_for_metrics": preprocess}
    trainer = _trainer_class(config)(model=model, args=args, train_dataset=features, data_collator=collator, processing_class=tokenizer,
                                     callbacks=[_progress_callback(), _loss_log_callback(output / LOSS_FILE), *callbacks], **evaluation)
    trainer.remove_callback(PrinterCallback)  # koquality's bar and loss.jsonl say it; no dicts on stdout
    if not resume and is_main_process():
        (output / LOSS_FILE).unlink(missing_ok=True)
        (output / EVAL_FILE).unlink(missing_ok=True)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output))  # the adapter alone with --lora; DeepSpeed gathers ZeRO-3 shards here

    summary = {
        "koquality": __version__, "source": str(source), "template": template, "config": config.model_dump(),
        "resolved": resolved,
        "data": {"texts": len(texts), "tokens": sum(map(len, token_rows)), "sequences": len(rows),
                 "sequence_tokens": sum(map(len, rows)),
                 **({"validation_texts": held_out, "validation_sequences": len(eval_rows)} if config.validation else {})},
        "steps": trainer.state.global_step, "train_loss": result.training_loss,
        "first_loss": next((r["loss"] for r in trainer.state.log_history if "loss" in r), None),
        "final_loss": next((r["loss"] for r in reversed(trainer.state.log_history) if "loss" in r), None),
        **({"eval_loss": next((r["eval_loss"] for r in reversed(trainer.state.log_history) if "eval_loss" in r), None)}
           if eval_rows else {}),
        "versions": versions(),
    }
    if not math.isfinite(summary["train_loss"]):
        raise KoqualityError(f"training diverged: mean loss {summary['train_loss']} (try a lower --lr or --precision fp32)")
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output))
        write_json(summary, output / CONFIG_FILE)
    return summary


def grad_accumulation(config: TrainConfig, world_size: int) -> int:
    """Accumulation steps that keep the global batch whatever the number of processes (GPUs)."""
    if config.global_batch_size is None:
        return config.grad_accum or 1
    per_step = config.batch_size * world_size
    if config.global_batch_size % per_step:
        raise KoqualityError(f"global batch {config.global_batch_size} is not a multiple of batch {config.batch_size} "
                             f"× {world_size} processes; set --grad-accum instead")
    return config.global_batch_size // per_step


def training_arguments(torch, config: TrainConfig, output: Path, evaluate: bool | None = None):
    """The Trainer's arguments for `config` on this machine, and what was resolved from it (accumulation
    from the global batch and the number of processes, precision, the DeepSpeed file). `evaluate`: whether there
    are validation sequences (default: whether `config` holds texts out). `scheduler: warmup_lr` is given to
    transformers as its nearest schedule, `constant_with_warmup` with the same warm-up steps (the original's 0:
    a constant lr), which the Trainer then replaces by the exact one (`_trainer_class`)."""
    import dataclasses

    from transformers import TrainingArguments

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    grad_accum = grad_accumulation(config, world_size)
    precision = _precision(torch, config.precision)
    deepspeed = str(deepspeed_config(config.deepspeed)) if config.deepspeed else None
    scheduler = config.scheduler
    if scheduler == "warmup_lr":
        scheduler = "constant_with_warmup"
    evaluate = config.validation > 0 if evaluate is None else evaluate
    optional = {}
    if evaluate:
        optional.update(eval_strategy="steps" if config.eval_steps else "epoch", eval_steps=config.eval_steps)
    if config.gradient_checkpointing:  # renamed in transformers 5
        fields = {f.name for f in dataclasses.fields(TrainingArguments)}
        optional["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = True
    args = TrainingArguments(
        output_dir=str(output), per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=grad_accum,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1, learning_rate=config.lr,
        lr_scheduler_type=scheduler, warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1, adam_beta2=config.adam_beta2, adam_epsilon=config.adam_epsilon,
        optim="adamw_torch", seed=config.seed, data_seed=config.seed,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not torch.cuda.is_available(), deepspeed=deepspeed,
        logging_steps=config.logging_steps, logging_first_step=True,
        save_strategy="steps" if config.save_steps else "epoch", save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit, report_to="none", disable_tqdm=True, remove_unused_columns=False,
        **optional)
    resolved = {"grad_accum": grad_accum, "world_size": world_size, "precision": precision,
                "global_batch_size": config.batch_size * grad_accum * world_size, "deepspeed": deepspeed}
    if config.scheduler == "warmup_lr":
        factors = ", ".join(f"{warmup_lr_factor(i, config.warmup_steps):g}" for i in range(max(2, config.warmup_steps) + 1))
        resolved["scheduler"] = f"warmup_lr (DeepSpeed 0.9.5 WarmupLR, log warm-up): lr × {factors}, then 1"
    if evaluate:
        resolved["evaluation"] = f"every {config.eval_steps} steps" if config.eval_steps else "every epoch"
    return args, resolved


def read_loss_log(model_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(model_dir) / LOSS_FILE
    if not path.exists():
        raise KoqualityError(f"{model_dir}: no {LOSS_FILE} (not a koquality training output)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

