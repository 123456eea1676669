"""The login of the two servers annotassist runs (the Gradio editor and the Label Studio ML backend): USER:PASSWORD
from the environment's ANNOTASSIST_AUTH, or the editor's --auth-file / --auth. Nothing here loads gradio or torch,
so a bad login is refused before either starts."""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import AnnotassistError

AUTH_ENV = "ANNOTASSIST_AUTH"


def read_auth(auth: str | None, auth_file: str | None) -> str | None:
    """The login from the command line's --auth-file FILE (first line USER:PASSWORD) or --auth USER:PASSWORD,
    else None (then ANNOTASSIST_AUTH). --auth is allowed but warned about: every user of the machine sees a
    process's arguments (ps)."""
    if auth and auth_file:
        raise AnnotassistError("give --auth-file or --auth, not both (prefer --auth-file, or "
                               f"{AUTH_ENV}=USER:PASSWORD: --auth shows the password in ps)")
    if auth:
        print(f"warning: --auth shows the password to every user of this machine (ps); set {AUTH_ENV}=USER:PASS "
              "or use --auth-file FILE instead", file=sys.stderr)
        parse_auth(auth)
        return auth
    if not auth_file:
        return None
    path = Path(auth_file)
    try:
        lines = path.read_text().splitlines()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotassistError(f"--auth-file {path} cannot be read ({getattr(e, 'strerror', None) or e}); write "
                               "USER:PASSWORD on its first line") from None
    text = lines[0].strip() if lines else ""
    if not parse_auth(text, f"the first line of --auth-file {path}"):
        raise AnnotassistError(f"--auth-file {path} is empty; write USER:PASSWORD on its first line")
    if mode & 0o077:
        print(f"warning: --auth-file {path} can be read by other users (mode {mode & 0o777:o}); chmod 600 {path}",
              file=sys.stderr)
    return text


def parse_auth(text: str | None, where: str = f"--auth / {AUTH_ENV}") -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise AnnotassistError(f"{where} must be USER:PASSWORD")
    return user, password
