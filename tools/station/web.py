"""What the pages share: templates, the user and their permissions, JSON bodies."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from micropen.host.errors import InvalidInput

from .auth import User, csrf_token

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def user_of(request: Request) -> User:
    user = request.scope["state"]["user"]
    assert isinstance(user, User)
    return user


def require(request: Request, permission: str) -> User:
    user = user_of(request)
    if not user.may(permission):
        raise HTTPException(
            403, f"{user.name} ({user.role}) may not {permission}; ask a user with that role"
        )
    return user


def page(request: Request, name: str, **context: Any) -> Response:
    user = user_of(request)
    config = request.app.state.config
    context.update(
        request=request,
        user=user,
        csrf=csrf_token(request.session),
        login_required=config.login_required,
        page_name=name.removesuffix(".html"),
    )
    return templates.TemplateResponse(request, name, context)


async def read_json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("the request body is not JSON; send application/json") from None
    except RecursionError:
        raise InvalidInput(
            "the request body is JSON nested too deeply; send a flat JSON object"
        ) from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def attachment(name: str) -> dict[str, str]:
    """A download's Content-Disposition (RFC 6266): ``filename`` with only safe ASCII
    characters (anything else becomes ``_``: no quote, semicolon or line break of a pen's
    serial reaches the header), and ``filename*`` with the name percent-encoded."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "download"
    encoded = quote(name, safe="")
    return {"Content-Disposition": f"attachment; filename=\"{safe}\"; filename*=UTF-8''{encoded}"}


def dumps(value: Any) -> str:
    """JSON for a page's embedded initial state (safe inside <script>)."""
    return json.dumps(value, default=str).replace("</", "<\\/")
