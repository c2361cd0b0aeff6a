"""Request fields → the engine's SamplingParams, with every check that needs the model."""

from __future__ import annotations

from collections.abc import Callable

from fireside.api.errors import APIError, bad_request
from fireside.api.schemas import SamplingFields
from fireside.api.served import ServedModel
from fireside.engine.types import SamplingParams, TokenConstraint


def check_model(served: ServedModel, model: str | None) -> tuple[str, str | None]:
    """The model name a response reports and the LoRA adapter to run (None: the base). vLLM
    accepts a missing model; a named one must be ours: the base or a loaded adapter."""
    name, lora = served.model_for(model)
    if model is not None and model != name:
        adapters = served.adapters.list() if served.adapters is not None else []
        names = ", ".join(repr(n) for n in [served.name, *(a.name for a in adapters)])
        raise APIError(
            f"the model {model!r} does not exist; this server serves {names}",
            404,
            type="not_found_error",
            param="model",
            code="model_not_found",
        )
    return name, lora


def check_prompt_ids(served: ServedModel, ids: list[int], param: str = "prompt") -> None:
    if not ids:
        raise bad_request("the prompt is empty: give at least one token", param)
    bad = next((t for t in ids if t >= served.vocab_size), None)
    if bad is not None:
        raise bad_request(
            f"token id {bad} is out of range: the vocabulary has {served.vocab_size} tokens", param
        )


def resolve_max_tokens(
    served: ServedModel, prompt_len: int, requested: int | None, default: int | None
) -> int:
    """The generation budget; a prompt that leaves no room is a 400, never truncated."""
    context = served.context_length
    room = context - prompt_len
    if requested is None:
        requested = default if default is not None else room
    if room <= 0 or requested > room:
        raise APIError(
            f"this model's maximum context length is {context} tokens, but the request has "
            f"{prompt_len} prompt tokens and asks for {requested} more; shorten the prompt or "
            f"lower max_tokens",
            400,
            param="max_tokens" if room > 0 else "messages",
            code="context_length_exceeded",
        )
    return requested


def sampling_params(
    served: ServedModel,
    fields: SamplingFields,
    *,
    max_tokens: int,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    skip_special_tokens: bool | None = None,
    keep_special_token_ids: list[int] | None = None,
    banned_token_ids: list[int] | None = None,
    constraint_factory: Callable[[], TokenConstraint] | None = None,
    lora: str | None = None,
) -> SamplingParams:
    stop = [fields.stop] if isinstance(fields.stop, str) else list(fields.stop or [])
    if any(not s for s in stop):
        raise bad_request("stop sequences must not be empty strings", "stop")
    logit_bias: dict[int, float] = {}
    for key, value in (fields.logit_bias or {}).items():
        if not key.isdigit() or int(key) >= served.vocab_size:
            raise bad_request(
                f"logit_bias key {key!r} is not a token id of this model", "logit_bias"
            )
        logit_bias[int(key)] = value
    stop_ids = list(fields.stop_token_ids or [])
    if any(t >= served.vocab_size for t in stop_ids):
        raise bad_request("stop_token_ids holds an id outside the vocabulary", "stop_token_ids")
    if fields.min_tokens > max_tokens:
        raise bad_request(
            f"min_tokens ({fields.min_tokens}) is larger than max_tokens ({max_tokens})",
            "min_tokens",
        )
    return SamplingParams(
        max_tokens=max_tokens,
        min_tokens=fields.min_tokens,
        temperature=1.0 if fields.temperature is None else fields.temperature,
        top_p=1.0 if fields.top_p is None else fields.top_p,
        top_k=max(fields.top_k or 0, 0),  # vLLM spells "off" as -1 or 0
        min_p=fields.min_p,
        repetition_penalty=fields.repetition_penalty,
        presence_penalty=fields.presence_penalty,
        frequency_penalty=fields.frequency_penalty,
        logit_bias=logit_bias,
        seed=fields.seed,
        n=fields.n,
        stop=stop,
        stop_token_ids=stop_ids,  # the engine adds the model's own end-of-turn tokens
        cache_salt=fields.cache_salt,
        ignore_eos=fields.ignore_eos,
        include_stop_str_in_output=fields.include_stop_str_in_output,
        skip_special_tokens=(
            fields.skip_special_tokens if skip_special_tokens is None else skip_special_tokens
        ),
        keep_special_token_ids=keep_special_token_ids or [],
        banned_token_ids=banned_token_ids or [],
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        constraint_factory=constraint_factory,
        lora=lora,
    )


def cache_salt(identity: str, asked: str | None) -> str:
    """The engine's cache salt for a caller: their identity, then any salt they asked for."""
    return f"{identity}\x00{asked or ''}"
