"""Prompt text for the agents and the LLM user simulator (our own wording).

ReACT agent: a system prompt (commands, rules, one line per API built from the environment's
tool schema, one filled call per API), then a short demonstration conversation as real chat
turns: small models copy a format they have seen in their own turns far better than one
described in prose. A closing system message fences the demonstration off, and its values are
deliberately unlike any database entity, so they cannot pass for an answer.

Function-calling agent: a shorter system prompt; the tools travel as the OpenAI tools schema.

LLM user (section 4.3's goal-based simulator): system prompt with the goal; a reminder is
appended as the last user message of every request.

Other environments (τ²): the environment's own instructions (`env.agent_instructions`: a role
sentence and the domain's policy) replace the travel desk's, the format rules stay, the API
examples are the environment's (`env.api_examples`) and the ToolWOZ demonstration is left
out; the LLM user's system prompt is the scenario's (`scenario.user_system_prompt()`).
"""

from __future__ import annotations

import json
from typing import Any

from josh_core.llm.actions import COMMAND_END, format_react
from josh_core.types import END_CONVERSATION, Message, env_feature

APIRETURN = "APIRETURN"
# How every format-error feedback message starts (grounding skips them: not the customer's words).
FORMAT_FEEDBACK_PREFIX = "ERROR:"

# ---------------------------------------------------------------------------------------------
# ReACT agent
# ---------------------------------------------------------------------------------------------

REACT_INSTRUCTIONS = f"""You are the assistant of a travel desk in Cambridge. You help one customer find and book restaurants, hotels and trains, and find attractions, using only the APIs listed below.

How to reply: write two commands, each closed by {COMMAND_END}.
PLAN <one private sentence about what you do next> {COMMAND_END}
then exactly one of:
APICALL {{"name": "<api name>", "parameters": {{...}}}} {COMMAND_END}
SPEAK <your message to the customer> {COMMAND_END}

Rules:
- The customer never sees PLAN, APICALL or the API results. SPEAK is the only way to talk to the customer, and it ends your turn.
- After an APICALL you receive a message that starts with {APIRETURN}. Then write PLAN again and make another APICALL or SPEAK.
- Find places and trains with the search APIs. Never invent names, train IDs, prices or reference numbers.
- Put into a call only values the customer said or an earlier {APIRETURN} showed. Leave out every parameter you do not know.
- Book only what a search returned, with its exact name (or trainID). Ask the customer for missing booking details first.
- When a search returns [], tell the customer nothing matched and ask what to change. Do not repeat a call that failed.
- After "{APIRETURN} ERROR", read the API list again and correct the call."""

EXAMPLES_HEADER = "One filled-in call per API (sample values; use the customer's values instead):"

# The format rules alone, for environments that bring their own instructions (τ²'s policy).
REACT_FORMAT = f"""How to reply: write two commands, each closed by {COMMAND_END}.
PLAN <one private sentence about what you do next> {COMMAND_END}
then exactly one of:
APICALL {{"name": "<api name>", "parameters": {{...}}}} {COMMAND_END}
SPEAK <your message to the user> {COMMAND_END}

Rules:
- The user never sees PLAN, APICALL or the API results. SPEAK is the only way to talk to the user, and it ends your turn.
- After an APICALL you receive a message that starts with {APIRETURN}. Then write PLAN again and make another APICALL or SPEAK.
- Put into a call only values the user said or an earlier {APIRETURN} showed. Never invent ids.
- After "{APIRETURN} ERROR", read the API list again and correct the call."""


def domain_instructions(env: Any) -> str | None:
    """An environment's own instructions for the agent (τ²: role and policy), or None when the
    prompts here are the environment's (ToolWOZ)."""
    text = env_feature(env, "agent_instructions")
    return text if isinstance(text, str) and text.strip() else None


def env_api_examples(env: Any, default: list[dict[str, Any]]) -> list[dict[str, Any]]:
    examples = env_feature(env, "api_examples")
    return examples if isinstance(examples, list) else default
DEMO_FENCE = ("That was an example conversation with a different customer. A new customer starts now: "
              "use only what this customer says and what the APIs return.")


def api_line(tool: dict[str, Any]) -> str:
    """`search_hotel(name, area: centre|north|..., ...)`: one API in one line."""
    fn = tool.get("function", tool)
    params = []
    for pname, prop in ((fn.get("parameters") or {}).get("properties") or {}).items():
        params.append(f"{pname}: {'|'.join(prop['enum'])}" if prop.get("enum") else pname)
    return f"{fn['name']}({', '.join(params)})"


def react_system_prompt(tools: list[dict[str, Any]], examples: list[dict[str, Any]],
                        instructions: str | None = None) -> str:
    names = {t.get("function", t)["name"] for t in tools}
    if instructions:
        lines = [instructions, "", REACT_FORMAT, "",
                 "APIs (give every parameter; where choices are listed, use one of them):"]
    else:
        lines = [REACT_INSTRUCTIONS, "", "APIs (every parameter is optional; where choices are listed, use one of them):"]
    lines += [api_line(t) for t in tools]
    lines += ["", EXAMPLES_HEADER]
    lines += [f"APICALL {json.dumps(ex)}" for ex in examples if ex["name"] in names]
    return "\n".join(lines)


def _apireturn(content: Any) -> Message:
    return Message(role="user", content=f"{APIRETURN} {json.dumps(content)}")


def react_demonstration() -> list[Message]:
    """A short example conversation in the exact action format (see structured.format_react)."""
    row = {"name": "the example lodge", "area": "east", "type": "guesthouse", "parking": "yes",
           "pricerange": "cheap", "stars": "3", "internet": "yes", "phone": "00000000000"}
    return [
        Message(role="user", content="Hi! I am looking for a cheap guesthouse in the east, with parking."),
        Message(role="assistant", content=format_react(
            "The customer wants a cheap guesthouse in the east with parking, so I search hotels with those values.",
            call={"name": "search_hotel", "parameters": {"area": "east", "parking": "yes",
                                                          "pricerange": "cheap", "type": "guesthouse"}})),
        _apireturn([row]),
        Message(role="assistant", content=format_react(
            "One guesthouse matches. I tell the customer and ask for the booking details.",
            speak="The example lodge is a cheap guesthouse in the east with free parking. "
                  "Shall I book it? If so, for how many people, which day and how many nights?")),
        Message(role="user", content="Yes please, 2 people from tuesday for 3 nights."),
        Message(role="assistant", content=format_react(
            "I have the name from the search and all booking details, so I book it.",
            call={"name": "book_hotel", "parameters": {"stay": "3", "day": "tuesday", "people": "2",
                                                        "name": "the example lodge"}})),
        _apireturn({"success": True, "return": {"reference": "EXAMPLE1"}}),
        Message(role="assistant", content=format_react(
            "The booking worked. I give the customer the reference number.",
            speak="Done! Your reference number is EXAMPLE1. Can I help with anything else?")),
        Message(role="user", content="I also need a train to the example town on sunday."),
        Message(role="assistant", content=format_react(
            "I know the destination and the day, so I search trains with them.",
            call={"name": "search_train", "parameters": {"destination": "example town", "day": "sunday"}})),
        _apireturn([]),
        Message(role="assistant", content=format_react(
            "No train matched. I tell the customer and ask what to change.",
            speak="I could not find a train to the example town on sunday. Would another day or destination work?")),
        Message(role="user", content="No thanks, that is all. Goodbye!"),
        Message(role="assistant", content=format_react(
            "The customer is done. I say goodbye.", speak="You are welcome. Goodbye!")),
    ]


def react_prompt_messages(tools: list[dict[str, Any]], examples: list[dict[str, Any]],
                          demonstrate: bool = True, instructions: str | None = None) -> list[Message]:
    """System prompt (+ demonstration and fence): everything before the real conversation.
    With an environment's own `instructions` there is no demonstration (it is ToolWOZ's)."""
    messages = [Message(role="system", content=react_system_prompt(tools, examples, instructions))]
    if demonstrate and not instructions:
        messages += react_demonstration()
        messages.append(Message(role="system", content=DEMO_FENCE))
    return messages


def react_format_feedback(reason: str) -> str:
    """The message the agent gets after output that is not a valid command pair."""
    return (f"{FORMAT_FEEDBACK_PREFIX} your last output was not valid ({reason}). Reply with PLAN <plan> {COMMAND_END} "
            f"followed by APICALL {{\"name\": ..., \"parameters\": {{...}}}} {COMMAND_END} "
            f"or SPEAK <message> {COMMAND_END}.")


# ---------------------------------------------------------------------------------------------
# Compact agent (small local models)
# ---------------------------------------------------------------------------------------------

# A few hundred tokens instead of ReACT's ~1,600 (system prompt + demonstration): a 135M model
# follows a short prompt no worse (measured in shared/notes: API name right 28% vs 20% on first
# turns), and every token of prompt is paid again by every leaf on a CPU. No PLAN: it was about
# half of all decoded tokens and a cut plan was usually followed by SPEAK.
COMPACT_INSTRUCTIONS = f"""You are the assistant of a travel desk in Cambridge. You find and book restaurants, hotels and trains, and find attractions, with these APIs (every parameter is optional; where choices are listed, use one of them):"""

COMPACT_RULES = f"""Reply with one line, either
APICALL {{"name": "<api name>", "parameters": {{...}}}} {COMMAND_END}
to search or book with values the customer said or an {APIRETURN} showed, or
SPEAK <your message to the customer> {COMMAND_END}
to answer the customer, which ends your turn. Search before you book, book only what a search returned, and tell the customer what you found."""


COMPACT_FORMAT = f"""Reply with one line, either
APICALL {{"name": "<api name>", "parameters": {{...}}}} {COMMAND_END}
with values the user said or an {APIRETURN} showed, or
SPEAK <your message to the user> {COMMAND_END}
to answer the user, which ends your turn."""


def compact_system_prompt(tools: list[dict[str, Any]], instructions: str | None = None) -> str:
    """The compact style's whole prompt: instructions, one line per API, the reply format."""
    if instructions:
        return "\n".join([instructions, "APIs:", *(api_line(t) for t in tools), COMPACT_FORMAT])
    return "\n".join([COMPACT_INSTRUCTIONS, *(api_line(t) for t in tools), COMPACT_RULES])


def compact_format_feedback(reason: str) -> str:
    return (f"{FORMAT_FEEDBACK_PREFIX} your last output was not valid ({reason}). Reply with "
            f"APICALL {{\"name\": ..., \"parameters\": {{...}}}} {COMMAND_END} or SPEAK <message> {COMMAND_END}.")


# ---------------------------------------------------------------------------------------------
# Function-calling agent
# ---------------------------------------------------------------------------------------------

FC_SYSTEM_PROMPT = """You are the assistant of a travel desk in Cambridge. You help one customer find and book restaurants, hotels and trains, and find attractions, with the functions you are given.
- Find places and trains with the search functions. Never invent names, train IDs, prices or reference numbers.
- Pass only values the customer said or an earlier function result showed; leave out what you do not know.
- Book only what a search returned, with its exact name (or trainID); ask the customer for missing booking details first.
- When a search returns [], tell the customer nothing matched and ask what to change. Do not repeat a call that failed.
- Your text replies go to the customer. Keep them short."""

FC_DOMAIN_SUFFIX = "Call the functions you are given; your text replies go to the user. Keep them short."


def fc_system_prompt(env: Any) -> str:
    """The function-calling agent's system prompt: the environment's instructions, else ours."""
    instructions = domain_instructions(env)
    return f"{instructions}\n\n{FC_DOMAIN_SUFFIX}" if instructions else FC_SYSTEM_PROMPT


FC_FORMAT_FEEDBACK = f"{FORMAT_FEEDBACK_PREFIX} your last reply was empty or not readable. Call a function or answer the customer."


# ---------------------------------------------------------------------------------------------
# LLM user simulator (goal-based, section 4.3)
# ---------------------------------------------------------------------------------------------

USER_SYSTEM_TEMPLATE = """You play a customer who phones the travel desk of Cambridge. The desk agent can search and book restaurants, hotels and trains, and find attractions. Your goals, in order:
{goals}

How to behave:
- Pursue the goals in the order given. Give the agent a few details at a time, not everything at once, as a real caller would.
- Before you agree to a booking, check that the place or train meets every one of your requirements. If one is not met, say which one.
- Make sure the agent has all the details for a booking (people, day, time or nights) before it books.
- If the agent finds nothing, or a booking fails, use the fallback in your goals if there is one.
- Ask for the details you need (such as phone number, address or reference number) once a place is found.
- Only state facts from your goals; do not make up new wishes. Say "a place to stay" unless your goals say hotel or guesthouse.
- Keep each message short, in plain words, as the customer. Never act as the agent.
- When all goals are done, or the agent clearly cannot help, say goodbye and then {end}."""

USER_REMINDER = ("(Reminder: you are the customer. Work on your next goal or finish the current one; do not "
                 "give everything at once; agree to a booking only if every requirement is met. "
                 f"Write {END_CONVERSATION} to hang up. Reply with the customer's next message only.)")
USER_OPENER_CUE = "(The agent has answered the phone: \"Hello, how can I help you?\")"


def user_goal_lines(scenario: Any) -> str:
    """The goal of a scenario as numbered lines (instructions when the scenario has them)."""
    if getattr(scenario, "instructions", None):
        return "\n".join(f"{i}. {line}" for i, line in enumerate(scenario.instructions, 1))
    lines = []
    for i, domain in enumerate(scenario.domains, 1):
        goal = scenario.goal[domain]
        parts = [f"{domain}: " + ", ".join(f"{k} {v}" for k, v in goal.info.items())]
        if goal.fail_info:
            parts.append("first try " + ", ".join(f"{k} {v}" for k, v in goal.fail_info.items()))
        if goal.book:
            parts.append("book for " + ", ".join(f"{k} {v}" for k, v in goal.book.items()))
        if goal.fail_book:
            parts.append("first try booking " + ", ".join(f"{k} {v}" for k, v in goal.fail_book.items()))
        if goal.reqt:
            parts.append("ask for " + ", ".join(goal.reqt))
        lines.append(f"{i}. " + "; ".join(parts))
    return "\n".join(lines)


def user_system_prompt(scenario: Any) -> str:
    """The LLM user's system prompt: the scenario's own (τ² tasks) or the travel desk's."""
    own = getattr(scenario, "user_system_prompt", None)
    if callable(own):
        return own()
    return USER_SYSTEM_TEMPLATE.format(goals=user_goal_lines(scenario), end=END_CONVERSATION)
