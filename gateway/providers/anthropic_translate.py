"""Translation between OpenAI chat.completions and Anthropic's Messages API.

Pure functions, plus a stream translator fed one Anthropic event at a time: no
I/O, so every mapping is table-tested. ``gateway.providers.anthropic`` does the
HTTP. Requests go OpenAI → Anthropic, answers, stream events, errors and batch
result lines come back Anthropic → OpenAI.

What Anthropic cannot express is dropped rather than failed on (``logprobs``,
``response_format``, ``seed``, penalties, OpenAI ``metadata``...), so a model
with an OpenAI target and an Anthropic fallback serves the same requests. What
would silently change the answer's meaning (``n`` > 1, audio input, file ids)
is an ``InvalidRequest``.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import AttemptFailed, InvalidRequest
from gateway.providers.base import BatchResult, BatchState, Usage

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 256 * 1024 * 1024

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> (OpenAI error type, code, HTTP status when none is known, e.g. in batch results).
ERROR_TYPES: dict[str, tuple[str, str | None, int]] = {
    "invalid_request_error": ("invalid_request_error", None, 400),
    "authentication_error": ("authentication_error", "invalid_api_key", 401),
    "billing_error": ("insufficient_quota", "insufficient_quota", 402),
    "permission_error": ("permission_error", None, 403),
    "not_found_error": ("invalid_request_error", "not_found", 404),
    "request_too_large": ("invalid_request_error", "request_too_large", 413),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded", 429),
    "api_error": ("server_error", None, 500),
    "timeout_error": ("server_error", "timeout", 504),
    "overloaded_error": ("server_error", "overloaded", 529),
}

# Fields that mean the same on both sides, and Anthropic-only fields a client may send through extra_body.
_PASS_THROUGH = ("top_p", "top_k", "thinking")


# -- requests: OpenAI chat.completions -> Anthropic Messages


def messages_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat.completions ``body``; raises ``InvalidRequest``."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be a list.", param="messages")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise InvalidRequest("Anthropic models return a single choice; 'n' must be 1.", param="n")
    system, turns = _conversation(messages)
    out: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body), "messages": turns}
    if system:
        out["system"] = system
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        # OpenAI's range is 0..2, Anthropic's 0..1: clamp, so a fallback does not fail on a valid OpenAI value.
        out["temperature"] = min(max(float(temperature), 0.0), 1.0)
    for key in _PASS_THROUGH:
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list):
        sequences = [s for s in stop if isinstance(s, str) and s]
        if sequences:
            out["stop_sequences"] = sequences
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        translated = _tools(tools)
        if translated:
            out["tools"] = translated
            choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
            if choice is not None:
                out["tool_choice"] = choice
    if body.get("stream"):
        out["stream"] = True
    return out


def _max_tokens(body: dict[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return DEFAULT_MAX_TOKENS


def _conversation(messages: list[Any]) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object.", param=f"messages[{i}]")
        role = message.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            for block in _blocks(message.get("content"), where):
                if block["type"] != "text":
                    raise InvalidRequest("System messages may hold text only.", param=f"{where}.content")
                system.append(block)
        elif role == "user":
            _append(turns, "user", _blocks(message.get("content"), where))
        elif role == "assistant":
            blocks = _blocks(message.get("content"), where)
            for j, call in enumerate(message.get("tool_calls") or ()):
                blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
            _append(turns, "assistant", blocks)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest("A tool message needs 'tool_call_id'.", param=f"{where}.tool_call_id")
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
            content = message.get("content")
            if isinstance(content, str):
                if content:
                    result["content"] = content
            elif content is not None:
                result["content"] = _blocks(content, where)
            _append(turns, "user", [result])
        else:
            raise InvalidRequest(f"Role {role!r} cannot be sent to an Anthropic model.", param=f"{where}.role")
    for turn in turns:
        blocks = turn["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text" and set(blocks[0]) == {"type", "text"}:
            turn["content"] = blocks[0]["text"]
    if turns and turns[-1]["role"] == "assistant" and isinstance(turns[-1]["content"], str):
        # A prefilled final assistant turn may not end in whitespace.
        turns[-1]["content"] = turns[-1]["content"].rstrip()
    if len(system) == 1 and set(system[0]) == {"type", "text"}:
        return system[0]["text"], turns
    return system, turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn; Anthropic wants user and assistant turns to alternate, so same-role turns merge."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest("'content' must be a string or a list of parts.", param=f"{where}.content")
    blocks = []
    for k, part in enumerate(content):
        block = _part(part, f"{where}.content[{k}]")
        if block is not None:
            if isinstance(part, dict) and isinstance(part.get("cache_control"), dict):
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
    return blocks


def _part(part: Any, where: str) -> dict[str, Any] | None:
    if isinstance(part, str):
        return {"type": "text", "text": part} if part else None
    if not isinstance(part, dict):
        raise InvalidRequest("A content part must be an object.", param=where)
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise InvalidRequest(f"A {kind} part needs a string {kind!r}.", param=where)
        return {"type": "text", "text": text} if text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise InvalidRequest("An image_url part needs a URL.", param=where)
        return {"type": "image", "source": _source(url, where)}
    if kind == "file":
        file = part.get("file") or {}
        data = file.get("file_data") if isinstance(file, dict) else None
        if not isinstance(data, str) or not data.startswith("data:"):
            raise InvalidRequest("Anthropic models take files inline only (file_data as a data: URL).", param=where)
        return {"type": "document", "source": _source(data, where)}
    if kind == "input_audio":
        raise InvalidRequest("Anthropic models do not accept audio input.", param=where)
    raise InvalidRequest(f"Content parts of type {kind!r} cannot be sent to an Anthropic model.", param=where)


def _source(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not media_type:
            raise InvalidRequest("A data: URL must be base64 with a media type.", param=where)
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise InvalidRequest("An image URL must be https:// or a base64 data: URL.", param=where)


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not isinstance(call.get("id"), str):
        raise InvalidRequest("A tool call needs 'id' and 'function.name'.", param=where)
    arguments = function.get("arguments")
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        # Models sometimes emit broken arguments that clients echo back; Anthropic needs an object.
        parsed = {}
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": parsed}


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest("A tool must be an object.", param=f"tools[{i}]")
        if tool.get("type", "function") != "function":
            continue  # OpenAI-hosted tool kinds have no Anthropic equivalent
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest("A function tool needs 'function.name'.", param=f"tools[{i}].function.name")
        schema = function.get("parameters")
        schema = dict(schema) if isinstance(schema, dict) else {"properties": {}}
        schema.setdefault("type", "object")
        translated: dict[str, Any] = {"name": function["name"], "input_schema": schema}
        if isinstance(function.get("description"), str) and function["description"]:
            translated["description"] = function["description"]
        if isinstance(tool.get("cache_control"), dict):
            translated["cache_control"] = tool["cache_control"]
        out.append(translated)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    if choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            out = {"type": "tool", "name": function["name"]}
    if parallel is False:
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


# -- answers: Anthropic message -> OpenAI chat.completion


def finish_reason(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def openai_usage(usage: Any) -> dict[str, Any]:
    """OpenAI usage for Anthropic's; cache reads and writes are input tokens, so they join the prompt."""
    u = usage if isinstance(usage, dict) else {}

    def count(key: str) -> int:
        value = u.get(key)
        return value if isinstance(value, int) else 0

    cached = count("cache_read_input_tokens")
    prompt = count("input_tokens") + count("cache_creation_input_tokens") + cached
    completion = count("output_tokens")
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def chat_completion(message: dict[str, Any], created: int) -> dict[str, Any]:
    """The OpenAI chat.completion for an Anthropic message."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})
        # thinking and server-tool blocks have no place in an OpenAI message
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    choice = {"index": 0, "message": reply, "finish_reason": finish_reason(message.get("stop_reason")) or "stop",
              "logprobs": None}
    return {"id": message.get("id"), "object": "chat.completion", "created": created, "model": message.get("model"),
            "choices": [choice], "usage": openai_usage(message.get("usage"))}


def usage_of(completion: dict[str, Any]) -> Usage | None:
    return Usage.from_openai(completion.get("usage"))


# -- errors


def error_object(status: int | None, error_type: Any, message: Any) -> dict[str, Any]:
    """An OpenAI error object for an Anthropic error type (or just a status when the body was not Anthropic's)."""
    known = ERROR_TYPES.get(error_type) if isinstance(error_type, str) else None
    if known is not None:
        otype, code = known[0], known[1]
    else:
        otype = "server_error" if status is None or status >= 500 else "invalid_request_error"
        code = error_type if isinstance(error_type, str) else None
    text = message if isinstance(message, str) and message else f"Upstream answered {status or 'with an error'}."
    return {"message": text, "type": otype, "param": None, "code": code}


def error_status(error_type: Any) -> int:
    known = ERROR_TYPES.get(error_type) if isinstance(error_type, str) else None
    return known[2] if known is not None else 500


def _anthropic_error(obj: Any) -> tuple[Any, Any]:
    """(type, message) of an Anthropic error body; batch results nest it once more."""
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict):
        return None, None
    return error.get("type"), error.get("message")


def openai_error(status: int | None, body: bytes) -> bytes:
    """An OpenAI-shaped error body for an Anthropic error response."""
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        obj = None
    error_type, message = _anthropic_error(obj)
    return orjson.dumps({"error": error_object(status, error_type, message)})


# -- streams: Anthropic events -> OpenAI chat.completion.chunk events


def event_data(ev: bytes) -> dict[str, Any] | None:
    """The JSON ``data`` of one whole SSE event; None for events without data. Raises ValueError on bad JSON."""
    lines = [line[5:].strip() for line in ev.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    obj = orjson.loads(b"\n".join(lines))
    if not isinstance(obj, dict):
        raise ValueError("an SSE event's data is not a JSON object")
    return obj


class StreamTranslator:
    """Turns Anthropic stream events into OpenAI chunk objects, one event at a time.

    The role chunk is held back until the first content block starts, so an
    ``error`` event right after ``message_start`` fails the attempt before any
    byte reaches the client, and the router can still retry or fall back.
    """

    def __init__(self, model: str, created: int) -> None:
        self.id = ""
        self.model = model
        self.created = created
        self.done = False
        self.finish_reason: str | None = None
        self._usage: dict[str, int] = {}
        self._opened = False
        self._tools: dict[int, int] = {}  # content block index -> OpenAI tool_calls index

    @property
    def usage(self) -> dict[str, Any]:
        return openai_usage(self._usage)

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The OpenAI chunks for one Anthropic event; raises ``AttemptFailed`` on an ``error`` event."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = str(message.get("id") or self.id)
            self.model = str(message.get("model") or self.model)
            self._count(message.get("usage"))
            return []
        if kind == "content_block_start":
            return self._block_start(event.get("index"), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(event.get("index"), event.get("delta") or {})
        if kind == "message_delta":
            self.finish_reason = finish_reason((event.get("delta") or {}).get("stop_reason"))
            self._count(event.get("usage"))
            return [*self._open(), self._chunk({}, self.finish_reason or "stop")]
        if kind == "message_stop":
            self.done = True
            return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                     "choices": [], "usage": self.usage}]
        if kind == "error":
            error_type, message = _anthropic_error(event)
            status = error_status(error_type)
            raise AttemptFailed(
                f"The upstream stream failed: {message or error_type}.",
                retryable=status == 429 or status >= 500,
                upstream_status=status,
                upstream_body=orjson.dumps({"error": error_object(status, error_type, message)}),
                upstream_content_type="application/json",
            )
        return []  # ping, content_block_stop, and event types added after this was written

    def _count(self, usage: Any) -> None:
        if isinstance(usage, dict):
            # Counts are cumulative: a later event's figure replaces an earlier one.
            self._usage.update({k: v for k, v in usage.items() if isinstance(v, int)})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def _open(self) -> list[dict[str, Any]]:
        if self._opened:
            return []
        self._opened = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: Any, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "text":
            out = self._open()
            if block.get("text"):
                out.append(self._chunk({"content": block["text"]}))
            return out
        if kind == "tool_use" and isinstance(index, int):
            position = self._tools[index] = len(self._tools)
            call = {"index": position, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            out = [*self._open(), self._chunk({"tool_calls": [call]})]
            if block.get("input"):
                out.append(self._arguments(position, orjson.dumps(block["input"]).decode()))
            return out
        # A thinking (or server-tool) block is output too: open the stream, so a long think is not a silent one.
        return self._open()

    def _delta(self, index: Any, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [*self._open(), self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and index in self._tools and delta.get("partial_json"):
            return [self._arguments(self._tools[index], delta["partial_json"])]
        return []  # thinking, signatures, citations

    def _arguments(self, position: int, text: str) -> dict[str, Any]:
        return self._chunk({"tool_calls": [{"index": position, "function": {"arguments": text}}]})


# -- message batches


def batch_request(custom_id: str, body: dict[str, Any], model: str) -> dict[str, Any]:
    params = messages_request(body, model)
    params.pop("stream", None)
    return {"custom_id": custom_id, "params": params}


def batch_counts(batch: dict[str, Any]) -> dict[str, int]:
    raw = batch.get("request_counts") or {}
    c: dict[str, int] = {}
    for key in ("processing", "succeeded", "errored", "canceled", "expired"):
        value = raw.get(key)
        c[key] = value if isinstance(value, int) else 0
    return {"total": sum(c.values()), "completed": c["succeeded"], "failed": c["errored"],
            "cancelled": c["canceled"], "expired": c["expired"], "processing": c["processing"]}


def batch_state(batch: dict[str, Any]) -> BatchState:
    """``in_progress`` and ``canceling`` are running; an ended batch is judged by what its requests did."""
    if batch.get("processing_status") != "ended":
        return BatchState.IN_PROGRESS
    counts = batch_counts(batch)
    if counts["cancelled"]:
        return BatchState.CANCELLED
    if counts["expired"]:
        return BatchState.EXPIRED
    return BatchState.COMPLETED


_NEVER_RAN = {
    "canceled": ("cancelled", "The provider batch was cancelled before this request ran."),
    "expired": ("expired", "The provider batch expired before this request ran."),
}


def batch_result(line: dict[str, Any], created: int) -> BatchResult:
    """One line of a batch's results file, in OpenAI shape."""
    custom_id = str(line.get("custom_id"))
    result = line.get("result")
    if not isinstance(result, dict):
        result = {}
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        completion = chat_completion(result["message"], created)
        return BatchResult(custom_id, 200, orjson.dumps(completion), None, usage_of(completion))
    if kind == "errored":
        error_type, message = _anthropic_error(result)
        status = error_status(error_type)
        error = error_object(status, error_type, message)
        return BatchResult(custom_id, status, orjson.dumps({"error": error}), error)
    code, text = _NEVER_RAN.get(str(kind), ("unknown_result", f"The provider reported a result of type {kind!r}."))
    return BatchResult(custom_id, None, None, {"message": text, "type": "upstream_error", "param": None, "code": code})


def batch_results(content: bytes, created: int) -> list[BatchResult]:
    """Every line of a JSONL results file; raises ValueError on a line that is not a JSON object."""
    out = []
    for raw in content.splitlines():
        if not raw.strip():
            continue
        line = orjson.loads(raw)
        if not isinstance(line, dict):
            raise ValueError("a batch result line is not a JSON object")
        out.append(batch_result(line, created))
    return out
