"""Training data from stored trees (paper section 2.2 and appendix B): SFT, KTO and DPO.

Every prompt starts with what the agent sent before the conversation (ReACT: system prompt,
demonstration turns and fence; `ExportOptions.prompt="system"` keeps the system prompt alone).

- SFT: the ideal path as one conversation: the agent's prompt messages, then every turn, agent
  turns in the agent's internal format (ReACT: PLAN/APICALL/SPEAK generations and APIRETURN
  messages; function calling: assistant tool calls and tool messages).
- KTO: every agent generation of an ideal-path turn is desirable; every generation of a
  negative turn (an alternative from a user turn on the ideal path that earned no reward) is
  undesirable. Each row's prompt is everything the agent saw before that generation.
- DPO: for each user turn on the ideal path, the ideal agent turn against each negative
  alternative. Both turns start from the same context; the pair is taken at their first
  differing generation, with the shared context (and any identical leading generations and
  API returns) as the prompt, so chosen and rejected always share their prompt exactly.

Filters (appendix B): only conversations that reached 100% (default; `min_reward=None` keeps
all), and turns with errors (a malformed generation or a failed API call) are dropped as
positives: an SFT conversation whose ideal path has one is skipped, and such ideal turns give
no desirable KTO rows and no DPO pairs. Negative turns keep their errors: those are exactly
what the negatives teach to avoid. Rows are de-duplicated; a KTO (prompt, completion) that is
both desirable and undesirable is kept only as desirable.

Label overrides from annotations apply: agent turns labelled "ideal" are positives and
"negative" ones negatives; an SFT conversation is skipped if any ideal-path agent turn was
relabelled. Formats: TRL conversational and OpenAI fine-tuning; see docs/data-formats.md.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from josh_core.safe_text import valid_json, valid_text
from josh_core.search.labels import Label, compute_labels, ideal_path
from josh_core.search.tree import ConversationTree, Node
from josh_core.types import Message

# The data an export writes: one examples function per kind (`EXAMPLES`, below the functions).
# The training kinds that learn from it name their export kind (josh_core/train/kinds.py).
ExportKind = str  # a key of EXAMPLES
ExportFormat = Literal["trl", "openai"]
EXPORT_FORMATS: tuple[str, ...] = ("trl", "openai")


class ExportOptions(BaseModel):
    kind: ExportKind
    format: ExportFormat = "trl"
    min_reward: float | None = 1.0  # None: every finished conversation
    # "agent": every prompt starts with exactly what the agent sent before the conversation
    # (ReACT: system prompt, demonstration turns, fence), so training and inference prefixes
    # match; "system": the system prompt alone (shorter rows; a model trained so is then run
    # without the demonstration, e.g. agent option demonstrate=False).
    prompt: Literal["agent", "system"] = "agent"
    drop_errors: bool = True
    use_annotations: bool = True

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in EXAMPLES:
            raise ValueError(f"unknown export kind {value!r}: expected one of {', '.join(EXPORT_KINDS)}")
        return value


class ConversationSource(BaseModel):
    """What extraction needs of one finished conversation."""

    conversation_id: str
    tree: ConversationTree
    system_prompt: str | None = None
    prompt_messages: list[Message] | None = None  # None: the system prompt alone
    tools: list[dict[str, Any]] | None = None
    uses_tools: bool = False  # function-calling agent: include `tools` in every row
    reward: float = 0.0
    overrides: dict[str, str] = Field(default_factory=dict)


class SFTExample(BaseModel):
    messages: list[Message]


class KTOExample(BaseModel):
    prompt: list[Message]
    completion: Message
    label: bool


class DPOExample(BaseModel):
    prompt: list[Message]
    chosen: Message
    rejected: Message


Example = SFTExample | KTOExample | DPOExample


# -- examples from one tree -------------------------------------------------------------------


def _system(source: ConversationSource) -> list[Message]:
    """The messages every prompt of this conversation starts with."""
    if source.prompt_messages is not None:
        return list(source.prompt_messages)
    if source.system_prompt is None:
        return []
    return [Message(role="system", content=source.system_prompt)]


def _context(source: ConversationSource, node: Node) -> list[Message]:
    """What the agent saw before `node`'s turn: system prompt and the path's memory."""
    assert node.parent_id is not None
    return _system(source) + source.tree.agent_memory(node.parent_id)


def _generations(source: ConversationSource, node: Node) -> list[tuple[list[Message], Message]]:
    """(prompt, completion) for every assistant generation of an agent turn."""
    context = _context(source, node)
    out = []
    for i, message in enumerate(node.internal):
        if message.role == "assistant":
            out.append((context + node.internal[:i], message))
    return out


def _labels(source: ConversationSource) -> dict[str, Label]:
    return compute_labels(source.tree, source.overrides)


def sft_examples(source: ConversationSource, drop_errors: bool = True) -> list[SFTExample]:
    labels = _labels(source)
    agent_turns = [n for n in ideal_path(source.tree) if n.kind == "agent"]
    if not agent_turns:
        return []
    if any(labels[n.id] != "ideal" for n in agent_turns):
        return []  # an annotator relabelled part of the ideal path
    if drop_errors and any(n.has_errors for n in agent_turns):
        return []
    messages = _system(source) + source.tree.agent_memory(agent_turns[-1].id)
    while messages and messages[-1].role != "assistant":
        messages.pop()  # the example ends with the agent's last generation
    return [SFTExample(messages=messages)] if messages else []


def kto_examples(source: ConversationSource, drop_errors: bool = True) -> list[KTOExample]:
    labels = _labels(source)
    examples = []
    for node in source.tree.agent_nodes():
        label = labels[node.id]
        if label == "ideal" and not (drop_errors and node.has_errors):
            desirable = True
        elif label == "negative":
            desirable = False
        else:
            continue
        for prompt, completion in _generations(source, node):
            examples.append(KTOExample(prompt=prompt, completion=completion, label=desirable))
    return examples


def dpo_examples(source: ConversationSource, drop_errors: bool = True) -> list[DPOExample]:
    labels = _labels(source)
    tree = source.tree
    examples = []
    for user_node in (n for n in tree.nodes.values() if n.kind == "user"):
        children = tree.children(user_node.id)
        chosen_turns = [c for c in children if labels[c.id] == "ideal"]
        rejected_turns = [c for c in children if labels[c.id] == "negative"]
        for chosen in chosen_turns:
            if drop_errors and chosen.has_errors:
                continue
            for rejected in rejected_turns:
                pair = _first_difference(chosen.internal, rejected.internal)
                if pair is None:
                    continue
                shared, good, bad = pair
                examples.append(
                    DPOExample(prompt=_context(source, chosen) + shared, chosen=good, rejected=bad)
                )
    return examples


def _first_difference(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], Message, Message] | None:
    """The shared prefix of two turns and their first differing assistant generations."""
    for i, (good, bad) in enumerate(zip(chosen, rejected)):
        if good == bad:
            continue
        if good.role == "assistant" and bad.role == "assistant":
            return chosen[:i], good, bad
        return None  # the turns diverged outside a generation (different API returns)
    return None  # one turn repeats the other


# Export kind -> its examples of one conversation (source, drop_errors).
EXAMPLES = {"sft": sft_examples, "kto": kto_examples, "dpo": dpo_examples}
EXPORT_KINDS: tuple[str, ...] = tuple(EXAMPLES)


def examples_for(source: ConversationSource, options: ExportOptions) -> list[Example]:
    return list(EXAMPLES[options.kind](source, options.drop_errors))


# -- formats ----------------------------------------------------------------------------------


def trl_message(message: Message) -> dict[str, Any]:
    """A message in TRL's conversational format (tool-call arguments as objects)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id or f"call_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.parameters},
            }
            for i, call in enumerate(message.tool_calls)
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def format_row(example: Example, fmt: ExportFormat, tools: list[dict[str, Any]] | None) -> dict:
    if fmt == "trl":
        row: dict[str, Any]
        if isinstance(example, SFTExample):
            row = {"messages": [trl_message(m) for m in example.messages]}
        elif isinstance(example, KTOExample):
            row = {
                "prompt": [trl_message(m) for m in example.prompt],
                "completion": [trl_message(example.completion)],
                "label": example.label,
            }
        else:
            row = {
                "prompt": [trl_message(m) for m in example.prompt],
                "chosen": [trl_message(example.chosen)],
                "rejected": [trl_message(example.rejected)],
            }
        if tools:
            row["tools"] = tools
        return row
    if isinstance(example, SFTExample):
        row = {"messages": [m.to_openai() for m in example.messages]}
        if tools:
            row["tools"] = tools
        return row
    if isinstance(example, DPOExample):
        task: dict[str, Any] = {"messages": [m.to_openai() for m in example.prompt]}
        if tools:
            task["tools"] = tools
        return {
            "input": task,
            "preferred_output": [example.chosen.to_openai()],
            "non_preferred_output": [example.rejected.to_openai()],
        }
    raise ValueError("OpenAI fine-tuning has no KTO format; export KTO data with --format trl")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(_canonical(value).encode(), digest_size=16).digest()


class ExtractStats(BaseModel):
    rows: int = 0
    conversations: int = 0  # conversations that gave at least one row
    considered: int = 0  # conversations that passed the reward filter


def iter_rows(
    sources: Iterable[ConversationSource], options: ExportOptions, stats: ExtractStats | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of every eligible conversation, de-duplicated, streamed (a whole run does not fit
    in memory as rows). Undesirable KTO rows are held back in a temporary file and come last,
    minus any whose (prompt, completion) the data also calls desirable."""
    if options.kind == "kto" and options.format == "openai":
        # Checked before any row is made (a generator would only raise once consumed).
        raise ValueError("OpenAI fine-tuning has no KTO format; export KTO data with --format trl")
    return _rows(sources, options, stats if stats is not None else ExtractStats())


def _rows(sources: Iterable[ConversationSource], options: ExportOptions, stats: ExtractStats) -> Iterator[dict[str, Any]]:
    seen: set[bytes] = set()
    desirable: set[bytes] = set()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as held:
        for source in sources:
            if options.min_reward is not None and source.reward < options.min_reward - 1e-9:
                continue
            stats.considered += 1
            tools = source.tools if source.uses_tools else None
            produced = False
            for example in examples_for(source, options):
                row = valid_json(format_row(example, options.format, tools))
                key = _digest(row)
                if key in seen:
                    continue
                seen.add(key)
                produced = True
                if isinstance(example, KTOExample):
                    pair = _digest([row["prompt"], row["completion"], row.get("tools")])
                    if not example.label:
                        held.write(pair.hex() + "\t" + jsonl_line(row))
                        continue
                    desirable.add(pair)
                stats.rows += 1
                yield row
            stats.conversations += produced
        held.seek(0)
        for line in held:
            pair, text = line.rstrip("\n").split("\t", 1)
            if bytes.fromhex(pair) not in desirable:
                stats.rows += 1
                yield json.loads(text)


def extract_rows(
    sources: Iterable[ConversationSource], options: ExportOptions
) -> tuple[list[dict[str, Any]], int]:
    """All rows in memory (tests, previews), and how many conversations gave at least one."""
    stats = ExtractStats()
    rows = list(iter_rows(sources, options, stats))
    return rows, stats.conversations


# Characters JSON leaves raw but some line readers (str.splitlines, editors) take for a line
# break: escaped, so that one row is always one line whoever reads the file.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def jsonl_line(row: Any) -> str:
    """`row` as one line of UTF-8 JSON, newline included: lone surrogates replaced (they
    cannot be encoded), Unicode line separators escaped."""
    return valid_text(json.dumps(row, ensure_ascii=False)).translate(_LINE_BREAKS) + "\n"


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write rows as JSONL through a temporary file beside `path`, moved into place only
    once every row is written: a failure leaves an old `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(jsonl_line(row))
                count += 1
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


# Leading bytes of files an export must never replace: a wrong `--out` (another database, an
# archive) would otherwise be overwritten with JSONL. DuckDB writes "DUCK" at offset 8.
_FOREIGN_MAGIC = (
    (8, b"DUCK", "a DuckDB database"),
    (0, b"SQLite format 3\x00", "an SQLite database"),
    (0, b"PAR1", "a Parquet file"),
    (0, b"PK\x03\x04", "a zip archive"),
    (0, b"\x1f\x8b", "a gzip file"),
    (0, b"\x89HDF", "an HDF5 file"),
)
_SNIFF_BYTES = 64 * 1024


def not_jsonl_reason(path: str | Path) -> str | None:
    """Why an existing file is not JSONL that an export may replace (None: empty, or JSONL).

    Judged by content, never by the name: known binary formats by their magic bytes, then
    the start of the file must be UTF-8 text whose first line is a JSON object (an export's
    row); a first line longer than the sniffed part only has to start like one."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
        whole = len(head) < _SNIFF_BYTES
    for offset, magic, what in _FOREIGN_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return what
    if b"\x00" in head:
        return "a binary file"
    try:  # a multi-byte character may be cut at the end of the sniffed part
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    first, newline, _ = text.lstrip().partition("\n")
    if not first.strip():
        return None  # empty or blank
    not_a_row = "text whose first line is not a JSON object"
    if not first.lstrip().startswith("{"):
        return not_a_row
    if newline or whole:
        try:
            if not isinstance(json.loads(first), dict):
                return not_a_row
        except ValueError:
            return not_a_row
    return None


def check_output_path(out: str | Path, db_path: str | Path) -> None:
    """Refuse an output that is the database itself (or its WAL), a folder, or an existing
    file that is not JSONL (another database, an archive, any text that is not JSONL):
    ValueError naming --out."""
    out, db_path = Path(out), Path(db_path)
    for protected in (db_path, db_path.with_name(db_path.name + ".wal")):
        if _same_file(out, protected):
            raise ValueError(f"--out {out} is the database {protected}: choose another output file")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give a file name")
    if out.exists() and not out.is_file():
        raise ValueError(f"--out {out} is not a regular file: give a file name")
    if out.exists():
        try:
            why = not_jsonl_reason(out)
        except OSError as error:
            raise ValueError(f"--out {out} cannot be read ({error.strerror or error}): choose another output file") from error
        if why:
            raise ValueError(f"--out {out} exists and is {why}, not a JSONL export: it is left as it is; remove it "
                             "or choose another output file")


# -- from the database ------------------------------------------------------------------------


class ExportSummary(BaseModel):
    export_id: str
    path: str
    kind: ExportKind
    format: ExportFormat
    rows: int
    conversations: int  # conversations that gave at least one row
    considered: int  # finished conversations that passed the reward filter
    recorded: bool = True  # the export was recorded in the database's `exports` table
    note: str | None = None  # why it was not


def load_sources(
    db: Any,
    run_id: str | None = None,
    use_annotations: bool = True,
    min_reward: float | None = None,
    chunk: int = 50,
    prompt: str = "agent",
    run_ids: list[str] | None = None,
) -> Iterator[ConversationSource]:
    """Finished conversations (of one run, of the runs `run_ids`, or all; at least
    `min_reward`) ready for extraction, loaded `chunk` trees at a time."""
    from josh_core.storage import reads

    found = ([c for r in run_ids for c in reads.list_conversations(db, run_id=r, status="done")]
             if run_ids is not None else reads.list_conversations(db, run_id=run_id, status="done"))
    conversations = [c for c in found if min_reward is None or (c.reward or 0.0) >= min_reward - 1e-9]
    runs = {run.id: run for run in reads.list_runs(db)}
    for start in range(0, len(conversations), chunk):
        part = conversations[start : start + chunk]
        ids = [c.id for c in part]
        trees = reads.load_trees(db, ids)
        overrides = reads.label_overrides(db, ids) if use_annotations else {}
        for conversation in part:
            tree = trees[conversation.id]
            run = runs.get(conversation.run_id)
            style = ((run.config.get("agent_options") or {}).get("style") if run else None) or "react"
            has_tool_calls = any(m.tool_calls for n in tree.agent_nodes() for m in n.internal)
            yield ConversationSource(
                conversation_id=conversation.id,
                tree=tree,
                system_prompt=conversation.system_prompt,
                # Conversations stored before prompt_messages existed fall back to the system prompt.
                prompt_messages=(
                    [Message.model_validate(m) for m in conversation.prompt_messages]
                    if prompt == "agent" and conversation.prompt_messages else None
                ),
                tools=conversation.tools,
                uses_tools=style == "fc" or has_tool_calls,
                reward=conversation.reward or 0.0,
                overrides={nid: lab for nid, lab in overrides.items() if nid in tree.nodes},
            )


def export_dataset(
    db: Any,
    options: ExportOptions,
    out: str | Path,
    run_id: str | None = None,
    run_ids: list[str] | None = None,
) -> ExportSummary:
    """Extract, write JSONL and record the export in the database. `run_ids`: the
    conversations of several runs as one data set (rows de-duplicated across them; recorded
    with the run ids in its options).

    The output is refused if it is the database; it is written aside and moved into place
    when complete. A `run_id` that is not in the database is a KeyError. The export is
    recorded without creating or migrating the schema; when the database cannot be written
    (read-only file, lock held) the JSONL stands and the summary says it was not recorded."""
    from josh_core.storage import reads, writes
    from josh_core.storage.db import Database, DatabaseError

    check_output_path(out, db.path)
    for known in ([run_id] if run_id is not None else []) + list(run_ids or []):
        reads.get_run(db, known)  # KeyError: no such run
    sources = load_sources(
        db, run_id=run_id, use_annotations=options.use_annotations, min_reward=options.min_reward,
        prompt=options.prompt, run_ids=run_ids,
    )
    stats = ExtractStats()
    count = write_jsonl(iter_rows(sources, options, stats), out)
    export_id, note = "", None
    try:
        export_id = writes.record_export(
            Database(db.path, migrate=False),
            kind=options.kind,
            format=options.format,
            path=str(Path(out).resolve()),
            run_id=run_id,
            options={**options.model_dump(), **({"run_ids": list(run_ids)} if run_ids is not None else {})},
            rows=count,
            conversations=stats.conversations,
        )
    except DatabaseError as error:
        note = f"the export was not recorded in the database: {error}"
    return ExportSummary(
        recorded=note is None,
        note=note,
        export_id=export_id,
        path=str(out),
        kind=options.kind,
        format=options.format,
        rows=count,
        conversations=stats.conversations,
        considered=stats.considered,
    )
