"""vLLM's own OpenAI serving classes (models, completions, chat completions) on the rollout engine's
AsyncLLM: the OpenAI protocol is vLLM's, not a copy of it; the routes in ``openai_api`` add the
version gate and the service's request limits around them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class OpenAIServing:
    models: Any  # vllm.entrypoints.openai.models.serving.OpenAIServingModels
    completion: Any  # vllm.entrypoints.openai.completion.serving.OpenAIServingCompletion
    chat: Any  # vllm.entrypoints.openai.chat_completion.serving.OpenAIServingChat
    # None: the served tokenizer has no chat template and none was configured; chat is refused.
    chat_template: str | None


def served_chat_template(llm, configured: str | None) -> str | None:
    """The configured template (a file path or the Jinja text itself), else the tokenizer's own."""
    if configured:
        from vllm.renderers.chat_utils import load_chat_template

        return load_chat_template(configured)
    return getattr(llm.get_tokenizer(), "chat_template", None) or None


def build_openai_serving(llm, model_path: Path, served_model_name: str, chat_template: str | None) -> OpenAIServing:
    """Built from the running AsyncLLM (its renderer holds the tokenizer), as vLLM's own API server does."""
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion
    from vllm.entrypoints.openai.models.protocol import BaseModelPath
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.renderers.online_renderer import OnlineRenderer

    template = served_chat_template(llm, chat_template)
    models = OpenAIServingModels(
        engine_client=llm, base_model_paths=[BaseModelPath(name=served_model_name, model_path=str(model_path))]
    )
    renderer = OnlineRenderer(
        model_config=llm.model_config,
        renderer=llm.renderer,
        request_logger=None,
        chat_template=template,
        chat_template_content_format="auto",
    )
    if template is not None:
        renderer.warmup()
    completion = OpenAIServingCompletion(llm, models, online_renderer=renderer, request_logger=None)
    chat = OpenAIServingChat(
        llm,
        models,
        "assistant",
        online_renderer=renderer,
        request_logger=None,
        chat_template=template,
        chat_template_content_format="auto",
    )
    return OpenAIServing(models=models, completion=completion, chat=chat, chat_template=template)
