"""A local Telegram Bot API: `sendMessage`, `editMessageText`, `answerCallbackQuery`.

Like the real API where our adapter depends on it:
* methods live at `/bot<token>/<method>`; a wrong token answers 401 `Unauthorized`;
* `parse_mode=HTML` is parsed strictly: a `<` or `&` that is not a supported tag or entity fails
  the whole call with `400 Bad Request: can't parse entities: …`;
* the text is 1-4,096 characters *after* entity parsing (counted in UTF-16 code units);
* unknown chats answer `400 Bad Request: chat not found`, blocked ones
  `403 Forbidden: bot was blocked by the user`; an identical edit answers
  `400 Bad Request: message is not modified: …`; `callback_data` must be 1-64 bytes;
* `script(...)` injects 429 with `parameters.retry_after`, 5xx or slow answers;
  `min_interval=` refuses with 429 whatever comes faster than that per chat.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

from tests.fakes.server import LocalHttpServer, RateLimit, Request, Response, Scripted, parse_body

MESSAGE_LIMIT: Final = 4_096
DEFAULT_TOKEN: Final = "123456789:AAtest-token_for-fake"
_PATH: Final = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")
_ALLOWED_TAGS: Final = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    }
)
_TAG: Final = re.compile(
    r"""<(?P<closing>/?)(?P<name>[A-Za-z][A-Za-z0-9-]*)
        (?P<attributes>(?:\s+[A-Za-z-]+(?:\s*=\s*(?:"[^"<>]*"|'[^'<>]*'|[^\s"'<>]+))?)*)
        \s*>""",
    re.VERBOSE,
)
_ENTITY: Final = re.compile(
    r"&(?:(?P<named>lt|gt|amp|quot)|#(?P<dec>[0-9]{1,7})|#x(?P<hex>[0-9a-fA-F]{1,6}));"
)
_SPECIAL: Final = re.compile(r"[<&>]")
_NAMED: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)


class EntityParseError(ValueError):
    pass


def parse_html(text: str) -> str:
    """The visible text of an HTML parse-mode message; `EntityParseError` like Telegram's."""
    visible: list[str] = []
    open_tags: list[str] = []
    index = 0
    while (special := _SPECIAL.search(text, index)) is not None:
        visible.append(text[index : special.start()])  # plain text up to the next <, & or >
        index = special.start()
        if special[0] == "<":
            index = _tag(text, index, open_tags)
        elif special[0] == "&":
            index = _entity(text, index, visible)
        else:
            raise EntityParseError(
                "Character '>' is reserved and must be escaped "
                f"at byte offset {_offset(text, index)}"
            )
    visible.append(text[index:])
    if open_tags:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{open_tags[-1]}"')
    return "".join(visible)


def _tag(text: str, index: int, open_tags: list[str]) -> int:
    match = _TAG.match(text, index)
    if match is None:
        raise EntityParseError(
            f"Can't find end of the tag starting at byte offset {_offset(text, index)}"
        )
    name = match["name"].lower()
    if name not in _ALLOWED_TAGS:
        raise EntityParseError(
            f'Unsupported start tag "{name}" at byte offset {_offset(text, index)}'
        )
    if not match["closing"]:
        open_tags.append(name)
    elif not open_tags or open_tags[-1] != name:
        expected = f'"</{open_tags[-1]}>"' if open_tags else "no end tag"
        raise EntityParseError(
            f"Unmatched end tag at byte offset {_offset(text, index)}, expected {expected}, "
            f'found "</{name}>"'
        )
    else:
        open_tags.pop()
    return match.end()


def _entity(text: str, index: int, visible: list[str]) -> int:
    match = _ENTITY.match(text, index)
    if match is None:
        raise EntityParseError(
            f"Character '&' is reserved and must be escaped at byte offset {_offset(text, index)}"
        )
    if match["named"]:
        visible.append(_NAMED[match["named"]])
    else:
        visible.append(chr(int(match["dec"]) if match["dec"] else int(match["hex"], 16)))
    return match.end()


def _offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(slots=True)
class TelegramMessage:
    """A message as the chat shows it now (`text` is what the reader sees)."""

    chat_id: str
    message_id: int
    html: str
    text: str
    reply_markup: dict[str, Any] | None
    link_preview_options: dict[str, Any] | None
    history: list[str] = field(default_factory=list)


def too_many_requests(retry_after: int) -> Scripted:
    return Scripted(
        429,
        json={
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        },
    )


def error(code: int, description: str) -> Scripted:
    return Scripted(code, json={"ok": False, "error_code": code, "description": description})


def _fail(code: int, description: str) -> Response:
    return Response.json({"ok": False, "error_code": code, "description": description}, code)


def _ok(result: Any) -> Response:
    return Response.json({"ok": True, "result": result})


class FakeTelegram(LocalHttpServer):
    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        known_chats: set[str] | None = None,
        blocked_chats: set[str] | None = None,
        min_interval: float | None = None,
    ) -> None:
        super().__init__()
        # Per chat, like Telegram's ~1 message/s (None: no limit).
        self.rate_limit = RateLimit(min_interval) if min_interval else None
        self.token = token
        self.known_chats = known_chats  # None: every chat exists
        self.blocked_chats = blocked_chats or set()
        self.messages: dict[tuple[str, int], TelegramMessage] = {}
        self.callback_answers: list[dict[str, Any]] = []
        self._message_ids = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        if self.rate_limit:
            self.rate_limit.reset()
        self.messages.clear()
        self.callback_answers.clear()

    @property
    def api_url(self) -> str:
        return self.url

    def chat(self, chat_id: str) -> list[TelegramMessage]:
        return [message for (chat, _), message in self.messages.items() if chat == chat_id]

    def endpoint_of(self, path: str) -> str:
        match = _PATH.match(path)
        return match["method"] if match else "unknown"

    async def answer(self, request: Request, body: bytes, endpoint: str) -> Response:
        match = _PATH.match(request.path)
        if match is None:
            return _fail(404, "Not Found")
        if match["token"] != self.token:
            return _fail(401, "Unauthorized")
        params = parse_body(request, body)
        if endpoint == "sendMessage":
            return self._send(params)
        if endpoint == "editMessageText":
            return self._edit(params)
        if endpoint == "answerCallbackQuery":
            return self._answer_callback(params)
        return _fail(404, "Not Found: method not found")

    def _send(self, params: dict[str, Any]) -> Response:
        chat_id = str(params.get("chat_id", ""))
        problem = self._chat_problem(chat_id) or _content_problem(params)
        if problem:
            return problem
        wait = self.rate_limit.retry_after(chat_id) if self.rate_limit else None
        if wait is not None:
            return too_many_requests(wait).response()
        message = TelegramMessage(
            chat_id=chat_id,
            message_id=next(self._message_ids),
            html=str(params["text"]),
            text=_visible(params),
            reply_markup=params.get("reply_markup"),
            link_preview_options=params.get("link_preview_options"),
        )
        self.messages[(chat_id, message.message_id)] = message
        return _ok(self._message_json(message))

    def _edit(self, params: dict[str, Any]) -> Response:
        chat_id = str(params.get("chat_id", ""))
        problem = self._chat_problem(chat_id) or _content_problem(params)
        if problem:
            return problem
        message = self.messages.get((chat_id, _int(params.get("message_id"))))
        if message is None:
            return _fail(400, "Bad Request: message to edit not found")
        if message.html == params["text"] and message.reply_markup == params.get("reply_markup"):
            return _fail(400, NOT_MODIFIED)
        message.history.append(message.text)
        message.html, message.text = str(params["text"]), _visible(params)
        message.reply_markup = params.get("reply_markup")
        return _ok(self._message_json(message))

    def _answer_callback(self, params: dict[str, Any]) -> Response:
        if not params.get("callback_query_id"):
            return _fail(400, "Bad Request: query is too old and response timeout expired")
        self.callback_answers.append(params)
        return _ok(True)

    def _chat_problem(self, chat_id: str) -> Response | None:
        if not chat_id:
            return _fail(400, "Bad Request: chat_id is empty")
        if chat_id in self.blocked_chats:
            return _fail(403, "Forbidden: bot was blocked by the user")
        if self.known_chats is not None and chat_id not in self.known_chats:
            return _fail(400, "Bad Request: chat not found")
        return None

    def _message_json(self, message: TelegramMessage) -> dict[str, Any]:
        chat: int | str = (
            int(message.chat_id) if message.chat_id.lstrip("-").isdigit() else message.chat_id
        )
        return {
            "message_id": message.message_id,
            "from": {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "npsloop"},
            "chat": {"id": chat, "type": "private"},
            "date": int(time.time()),
            "text": message.text,
        }


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _visible(params: dict[str, Any]) -> str:
    text = str(params["text"])
    return parse_html(text) if str(params.get("parse_mode", "")).upper() == "HTML" else text


def _content_problem(params: dict[str, Any]) -> Response | None:
    if "text" not in params:
        return _fail(400, "Bad Request: message text is empty")
    try:
        visible = _visible(params)
    except EntityParseError as exc:
        return _fail(400, f"Bad Request: can't parse entities: {exc}")
    if not visible.strip():
        return _fail(400, "Bad Request: message text is empty")
    if utf16_units(visible) > MESSAGE_LIMIT:
        return _fail(400, "Bad Request: message is too long")
    return _markup_problem(params.get("reply_markup"))


def _markup_problem(markup: Any) -> Response | None:
    if markup is None:
        return None
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        return _fail(
            400,
            "Bad Request: can't parse inline keyboard button: "
            "InlineKeyboardMarkup must be an Array of Arrays",
        )
    for button in (button for row in rows for button in row):
        if not isinstance(button, dict) or not button.get("text"):
            return _fail(
                400,
                "Bad Request: can't parse inline keyboard button: "
                "Text buttons are unallowed in the inline keyboard",
            )
        if "callback_data" in button and not 1 <= len(str(button["callback_data"]).encode()) <= 64:
            return _fail(400, "Bad Request: BUTTON_DATA_INVALID")
        if "url" in button and not str(button["url"]).startswith(("http://", "https://", "tg://")):
            return _fail(400, "Bad Request: BUTTON_URL_INVALID")
    return None
