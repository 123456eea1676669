"""A small HTTP client for Label Studio's REST API: authentication, bounded retries, errors a person can act on.

The API key is a legacy token ("Authorization: Token KEY") or a personal access token, a JWT refresh token that
is exchanged at /api/token/refresh/ for a short-lived access token ("Bearer"), refreshed when it expires. The key
lives only in this object: it is never logged, printed or written anywhere.

Retries: connection failures, timeouts and 502/503/504 are retried with exponential backoff, a bounded number
of times. A POST is retried only when the connection could not be made at all (the server never saw it), so a
slow server can never make an import happen twice.
"""
from __future__ import annotations

import base64
import json
import os
import time

import httpx

from ..errors import AnnotassistError

ENV_KEY = "LABEL_STUDIO_API_KEY"
RETRY_STATUS = {502, 503, 504}


class LabelStudioError(AnnotassistError):
    pass


def _is_jwt(key: str) -> bool:
    parts = key.split(".")
    if len(parts) != 3:
        return False
    try:
        head = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return isinstance(head, dict) and "alg" in head


class LabelStudioClient:
    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.5):
        self.url = url.rstrip("/")
        key = api_key or os.environ.get(ENV_KEY, "")
        if not key:
            raise LabelStudioError(f"no Label Studio API key: set {ENV_KEY} to your legacy token or personal "
                                   f"access token (Label Studio at {self.url}: Account & Settings)")
        self._key = key
        self._jwt = _is_jwt(key)
        self._access: str | None = None
        self.retries, self.backoff = retries, backoff
        self._http = httpx.Client(base_url=self.url, timeout=timeout, follow_redirects=False)

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    # -- authentication ----------------------------------------------------------------------------------

    def _auth(self) -> dict:
        if not self._jwt:
            return {"Authorization": f"Token {self._key}"}
        if self._access is None:
            r = self._send("POST", "/api/token/refresh/", {}, json={"refresh": self._key})
            if r.status_code != 200:
                raise LabelStudioError(f"Label Studio at {self.url} refused the personal access token in "
                                       f"{ENV_KEY} (HTTP {r.status_code}): it is wrong, revoked or expired; "
                                       "create a new one under Account & Settings > Personal Access Token")
            self._access = r.json()["access"]
        return {"Authorization": f"Bearer {self._access}"}

    # -- requests ----------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, ok=(200, 201, 204), allow=(), **kw) -> httpx.Response:
        """Send with authentication and retries; a status outside `ok` and `allow` raises a clear error."""
        r = self._send(method, path, self._auth(), **kw)
        if r.status_code == 401 and self._jwt:  # the access token expired: refresh once
            self._access = None
            r = self._send(method, path, self._auth(), **kw)
        if r.status_code in ok or r.status_code in allow:
            return r
        if r.status_code in (401, 403):
            kind = "personal access token" if self._jwt else "legacy token"
            raise LabelStudioError(
                f"Label Studio at {self.url} refused the API key in {ENV_KEY} (HTTP {r.status_code}: "
                f"{_detail(r)}). Check it is this server's {kind} (Account & Settings); legacy tokens must "
                "also be enabled for the organization")
        raise LabelStudioError(f"Label Studio at {self.url}: {method} {path} failed with HTTP {r.status_code}: "
                               f"{_detail(r)}")

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw).json()

    def post(self, path: str, **kw):
        return self.request("POST", path, **kw).json()

    def patch(self, path: str, **kw):
        return self.request("PATCH", path, **kw).json()

    def _send(self, method: str, path: str, headers: dict, **kw) -> httpx.Response:
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                r = self._http.request(method, path, headers=headers, **kw)
            except httpx.ConnectError as e:
                last = f"cannot connect ({e.__class__.__name__})"
                continue
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                last = f"no answer ({e.__class__.__name__})"
                if method == "POST":
                    break  # the server may have acted on it: never send it twice
                continue
            if r.status_code in RETRY_STATUS and method != "POST":
                last = f"HTTP {r.status_code}"
                continue
            return r
        raise LabelStudioError(
            f"Label Studio at {self.url} is not reachable: {last} after {attempt + 1} tries ({method} {path}). "
            "Is the server running at that URL? Start one with 'label-studio start' (see the README's Label "
            "Studio section); nothing was changed in the workspace for the requests that failed")


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
        parts = [str(body.get(k)) for k in ("detail", "validation_errors") if body.get(k)]
        return ": ".join(parts or [str(body)])[:400]
    except ValueError:
        return r.text[:200]
