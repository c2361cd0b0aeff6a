"""/tokenize, /detokenize and /tokenizer_info in vLLM's shapes (lm-eval's remote tokenizer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from fireside.api.errors import bad_request
from fireside.api.sampling import check_model
from fireside.api.schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from fireside.api.served import ServedModel
from fireside.api.state import served_model
from fireside.api.tools import template_messages, template_tools
from fireside.errors import ChatTemplateError, TokenizerError

router = APIRouter(tags=["tokenizer"])
Served = Annotated[ServedModel, Depends(served_model)]


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, served: Served) -> TokenizeResponse:
    check_model(served, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise bad_request("give exactly one of prompt or messages", "prompt")
    if body.messages is not None:
        tools = template_tools(body.tools) if body.tools else None
        try:
            ids = served.tokenizer.render_chat(
                template_messages(body.messages),
                add_generation_prompt=body.add_generation_prompt,
                tools=tools,
            ).ids
        except (ChatTemplateError, TokenizerError) as e:
            raise bad_request(str(e), "messages") from None
    else:
        assert body.prompt is not None
        encoded = served.tokenizer.backend.encode(
            body.prompt, add_special_tokens=body.add_special_tokens
        )
        ids = list(encoded.ids)
    strs = [served.tokenizer.id_to_token(t) or "" for t in ids] if body.return_token_strs else None
    return TokenizeResponse(
        count=len(ids), max_model_len=served.context_length, tokens=ids, token_strs=strs
    )


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, served: Served) -> DetokenizeResponse:
    check_model(served, body.model)
    bad = next((t for t in body.tokens if t >= served.vocab_size), None)
    if bad is not None:
        raise bad_request(
            f"token id {bad} is out of range: the vocabulary has {served.vocab_size} tokens",
            "tokens",
        )
    return DetokenizeResponse(prompt=served.tokenizer.decode(body.tokens))


@router.get("/tokenizer_info", response_model=TokenizerInfo)
async def tokenizer_info(served: Served) -> TokenizerInfo:
    special = served.tokenizer.special
    return TokenizerInfo(
        tokenizer_class="PreTrainedTokenizerFast",
        bos_token=special.get("bos_token"),
        eos_token=special.get("eos_token"),
        pad_token=special.get("pad_token"),
        unk_token=special.get("unk_token"),
        chat_template=served.tokenizer.chat_template,
        model_max_length=served.context_length,
        vocab_size=served.tokenizer.vocab_size,
    )
