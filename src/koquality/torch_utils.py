"""Shared pieces of the Hugging Face backends: importing torch with a clear message, device/dtype choice,
and packing length-sorted rows into batches under a token budget."""

from __future__ import annotations

from typing import Any, Sequence

from .errors import KoqualityError, missing_extra


def import_torch(what: str):
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        raise missing_extra(what) from None
    from .threads import threads

    torch.set_num_threads(threads())  # torch's default is the machine's cores, not the ones this process may use
    return torch


def resolve_device(torch, device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise KoqualityError(f"--device {device}: expected auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KoqualityError(f"--device {device}: no CUDA device is available (use --device cpu)")
    return device


def resolve_dtype(torch, dtype: str, device: str):
    """auto: fp32 on CPU (exact), bf16 on GPU (fp16 overflows in GPT-NeoX)."""
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype not in names:
        raise KoqualityError(f"--dtype {dtype}: expected auto, float32, bfloat16 or float16")
    return names[dtype]


def token_budget_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length (longest first) and cut so that rows × longest row ≤ batch_tokens.

    Sorting keeps padding small; longest-first makes the first batch the largest, so an out-of-memory
    error shows up at once rather than at the end of a long run.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * max(longest, 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def right_padded(torch, rows: list[list[int]], pad_id: int, device: str):
    """Token id rows → (input_ids, attention_mask), right-padded to the longest row, on `device`."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    return input_ids.to(device), mask.to(device)


def load_options(revision: str | None, trust_remote_code: bool) -> dict[str, Any]:
    return {"revision": revision, "trust_remote_code": trust_remote_code}


def from_pretrained(auto_class, name: str, what: str, **options: Any):
    """`auto_class.from_pretrained(name, **options)` whose failures (no such model, no hub, custom code that
    was not trusted) are one-line errors naming the model."""
    from . import hub

    hub.require(models=[name])
    try:
        return auto_class.from_pretrained(name, **options)
    except (OSError, ValueError, KeyError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "trust_remote_code" in str(e) and not options.get("trust_remote_code"):
            detail = "it ships its own Python code, which koquality runs only with --trust-remote-code (recipe: trust_remote_code: true)"
        raise KoqualityError(f"{name}: cannot load {what} ({detail})") from None


def resolved_device_dtype(settings: dict[str, Any]) -> dict[str, Any]:
    """The device and dtype "auto" stands for on this machine: bf16 scores are not fp32 scores."""
    torch = import_torch("the hf backends")
    device = resolve_device(torch, settings.get("device", "auto"))
    return {"device": device.split(":")[0], "dtype": str(resolve_dtype(torch, settings.get("dtype", "auto"), device))}
