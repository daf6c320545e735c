"""The model a training starts from: an agent SPEC resolved to transformers weights (+ adapter).

    embedded[@ADAPTER_DIR]       the embedded SmolLM2-135M-Instruct (`embedded_model_dir()`)
    hf:PATH_OR_ID[@ADAPTER_DIR]  any transformers causal LM

With `@ADAPTER_DIR` the training continues that LoRA adapter (loaded trainable), so round k of
self-training starts from round k-1's adapter; otherwise a fresh LoRA adapter is added.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from josh_core.train.config import TrainConfig, TrainingConfigError

log = logging.getLogger(__name__)


@dataclass
class BaseModelSpec:
    spec: str  # as given
    model_path: str  # transformers directory or hub id
    adapter: str | None  # adapter dir to continue, or None


def resolve_base(spec: str) -> BaseModelSpec:
    from josh_core.llm.specs import split_adapter
    from josh_core.policies.factory import split_spec

    try:
        kind, rest = split_spec(spec)
    except ValueError as error:
        raise TrainingConfigError(f"--base: {error}") from None
    if kind == "embedded":
        from josh_core.llm.embedded import embedded_model_dir

        adapter = rest[1:] if rest.startswith("@") else None
        model_path = str(embedded_model_dir())
    elif kind == "hf":
        model_path, adapter = split_adapter(rest)
        if not model_path:
            raise TrainingConfigError("--base hf: needs a model: hf:PATH_OR_ID[@ADAPTER_DIR]")
    else:
        raise TrainingConfigError(
            f"cannot train {spec!r}: --base must be a local transformers model, "
            "embedded[@ADAPTER_DIR] or hf:PATH_OR_ID[@ADAPTER_DIR] (serve the result with vLLM for openai:/vllm:)"
        )
    if adapter is not None:
        from josh_core.adapter_folder import adapter_problem

        problem = adapter_problem(adapter)
        if problem:
            raise TrainingConfigError(f"--base {spec}: no LoRA adapter to continue ({problem})")
        from josh_core.adapter_folder import resolve_adapter

        adapter = resolve_adapter(adapter)  # `shipped:NAME`: the repository's adapters/NAME
    local = model_path.startswith((".", "/", "~")) or Path(model_path).expanduser().exists()
    if local and not (Path(model_path).expanduser() / "config.json").is_file():
        exists = Path(model_path).expanduser().exists()
        what = "no transformers model (config.json)" if exists else "no model folder"
        raise TrainingConfigError(f"--base {spec}: {what} at {model_path}")
    return BaseModelSpec(spec=spec, model_path=model_path, adapter=adapter)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA setup raising at import
        return False
    return True


@dataclass
class Precision:
    dtype: Any  # torch dtype of the loaded weights
    bf16: bool
    fp16: bool
    four_bit: bool
    gradient_checkpointing: bool
    notes: list[str]


def choose_precision(config: TrainConfig) -> Precision:
    """CPU: float32, no mixed precision, no 4-bit. CUDA: bf16 where supported (else fp16 mixed
    precision), 4-bit only when asked for and bitsandbytes is installed."""
    import torch

    notes: list[str] = []
    cuda = cuda_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    bf16 = bf16_ok if config.bf16 is None else bool(config.bf16)
    if bf16 and not bf16_ok:
        notes.append("bf16 asked for but not supported here: training in float32")
        bf16 = False
    fp16 = cuda and not bf16 and config.bf16 is None
    four_bit = False
    if config.load_in_4bit:
        if not cuda:
            notes.append("load_in_4bit ignored: no CUDA device")
        elif not bitsandbytes_available():
            notes.append("load_in_4bit ignored: bitsandbytes is not installed (pip install bitsandbytes)")
        else:
            four_bit = True
    if bf16:
        dtype = torch.bfloat16
    elif fp16:
        dtype = torch.float16 if four_bit else torch.float32  # fp16 mixed precision keeps fp32 masters
    else:
        dtype = torch.float32
    checkpointing = cuda if config.gradient_checkpointing is None else bool(config.gradient_checkpointing)
    return Precision(dtype=dtype, bf16=bf16, fp16=fp16, four_bit=four_bit,
                     gradient_checkpointing=checkpointing, notes=notes)


def _set_threads() -> None:
    """CPU threads as for inference (`hf_backend._set_cpu_threads`): `JOSH_TORCH_THREADS`, else
    all cores but one. On two shared cores a forward pass of 800 tokens took 27.5 s with two
    OpenMP threads and 5.9 s with one (measured while other jobs ran)."""
    import torch

    if torch.cuda.is_available():
        return
    wanted = os.environ.get("JOSH_TORCH_THREADS")
    threads = int(wanted) if wanted else max(1, (os.cpu_count() or 2) - 1)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as error:  # a hub id that cannot be fetched here, a broken folder
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrainingConfigError(f"--base: cannot load the model {model_path}: {first}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingConfigError(
            f"{model_path} has no chat template: the exported conversations need one to be rendered"
        )
    return tokenizer


def load_model(base: BaseModelSpec, config: TrainConfig, precision: Precision):
    """The model to train: base weights (4-bit when chosen) with a fresh LoRA adapter, or the
    adapter of `base.adapter` loaded trainable. Returns a PeftModel."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, set_seed

    _set_threads()
    set_seed(config.seed)  # LoRA's A matrices are initialised at random: seed them (TRL does so too)
    kwargs: dict[str, Any] = {"dtype": precision.dtype}
    if precision.four_bit:
        from transformers import BitsAndBytesConfig

        # As the paper's scripts: NF4 with double quantisation, bf16 compute.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if precision.bf16 else torch.float16,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(base.model_path, **kwargs)
    model.config.use_cache = False
    if precision.four_bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=precision.gradient_checkpointing
        )
    if base.adapter is not None:
        return PeftModel.from_pretrained(model, base.adapter, is_trainable=True)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
