"""Label Studio's REST API through `label_studio_sdk.LabelStudio`, plus the little the SDK leaves to us.

The SDK makes the calls (projects, tasks, predictions, annotations, storages, webhooks) and handles both kinds
of key: a legacy token ("Token KEY") or a personal access token (a JWT refresh token it exchanges for
short-lived access tokens). This module adds what it lacks:

- the address is checked first: http(s) only, and never with a user name or key inside it (it would be printed
  back in messages and stored in the workspace's config); every message shows it with any such part hidden;
- bounded retries that never send a POST twice: the SDK retries POSTs on 5xx and on broken connections, which
  could import a task twice, so its own retries are off and RetryTransport below (under the SDK's httpx
  client) retries connection failures for every method and timeouts and 502/503/504 for all but POST;
- errors a person can act on instead of tracebacks: a refused key, a server that answers HTML (not Label
  Studio, a login page or a proxy), an unreachable server;
- the multipart file upload and the media download, as thin calls on the SDK's own HTTP client.

The key lives only in the SDK object: it is never logged, printed or written anywhere.
"""
from __future__ import annotations

import os
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from ..errors import AnnotassistError

ENV_KEY = "LABEL_STUDIO_API_KEY"
RETRY_STATUS = {502, 503, 504}
REFRESH_PATH = "/api/token/refresh/"


class LabelStudioError(AnnotassistError):
    pass


def redact(url: str) -> str:
    """The URL with any user name / password / key hidden (for messages)."""
    parts = urlsplit(str(url))
    if "@" not in parts.netloc:
        return str(url)
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def check_url(url: str, option: str = "--url") -> str:
    """Label Studio's address, checked: http(s), a host, no credentials inside. Returns it without a trailing /."""
    raw = str(url or "").strip()
    parts = urlsplit(raw)
    shown = redact(raw)
    if parts.scheme not in ("http", "https") or "://" not in raw:
        if "://" in raw:
            raise LabelStudioError(f"{option} {shown}: Label Studio is reached over http or https, not "
                                   f"{parts.scheme or 'this'}; pass e.g. {option} http://localhost:8080")
        guess = redact("http://" + raw) if raw else "http://localhost:8080"
        raise LabelStudioError(f"{option} {shown or repr(raw)} has no http:// or https:// in front; pass "
                               f"{option} {guess}")
    if parts.username is not None or parts.password is not None:
        plain = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
        raise LabelStudioError(f"{option} {shown} holds a user name or key; never put the key in the address (it "
                               f"would end up in messages and the workspace's config): pass {option} "
                               f"{plain.rstrip('/')} and put the key in {ENV_KEY}")
    if not parts.hostname:
        raise LabelStudioError(f"{option} {shown} names no host; pass e.g. {option} http://localhost:8080")
    return raw.rstrip("/")


def is_jwt(key: str) -> bool:
    """A personal access token (a JWT) rather than a legacy token."""
    import base64
    import json

    parts = key.split(".")
    if len(parts) != 3:
        return False
    try:
        head = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return isinstance(head, dict) and "alg" in head


class RetryTransport(httpx.BaseTransport):
    """httpx transport with bounded exponential-backoff retries. A POST is retried only when the connection
    could not be made at all (the server never saw it), so a slow server can never make an import happen
    twice. Gives up with a LabelStudioError naming the server."""

    def __init__(self, url: str, retries: int, backoff: float):
        self.url, self.retries, self.backoff = url, retries, backoff
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        last, attempt = "", 0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._inner.handle_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last = f"cannot connect ({e.__class__.__name__})"
                continue
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                last = f"no answer ({e.__class__.__name__})"
                if request.method == "POST":
                    break  # the server may have acted on it: never send it twice
                continue
            if response.status_code in RETRY_STATUS and request.method != "POST":
                response.close()
                last = f"HTTP {response.status_code}"
                continue
            return response
        raise LabelStudioError(
            f"Label Studio at {self.url} is not reachable: {last} after {attempt + 1} tries ({request.method} "
            f"{request.url.path}). Is the server running at that URL? Start one with 'label-studio start' (see "
            "the README's Label Studio section); nothing was changed in the workspace for the requests that failed")

    def close(self) -> None:
        self._inner.close()


class LabelStudioClient:
    """One Label Studio server: `sdk` is the SDK client; run its calls through `call` for clear errors."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.5):
        self.url = check_url(url)
        key = api_key or os.environ.get(ENV_KEY, "")
        if not key:
            raise LabelStudioError(f"no Label Studio API key: set {ENV_KEY} to your legacy token or personal "
                                   f"access token (Label Studio at {self.url}: Account & Settings)")
        self._jwt = is_jwt(key)
        self._last = threading.local()  # the request in flight, per thread, for messages
        self._http = httpx.Client(timeout=timeout, follow_redirects=False,
                                  transport=RetryTransport(self.url, retries, backoff),
                                  event_hooks={"request": [self._remember]})
        try:
            self.sdk = LabelStudio(base_url=self.url, api_key=key, httpx_client=self._http, max_retries=0,
                                   timeout=timeout)
        except ApiError as e:  # the SDK checks a personal access token's expiry before sending it
            self._http.close()
            raise self._refused(e, token_itself=True) from None

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def _remember(self, request: httpx.Request) -> None:
        self._last.what = f"{request.method} {request.url.path}"

    def _what(self) -> str:
        return getattr(self._last, "what", "")

    # -- calls ---------------------------------------------------------------------------------------------

    def call(self, fn, *args, **kwargs):
        """Run one SDK call; any failure becomes a LabelStudioError a person can act on. A personal access
        token's access token that the server no longer accepts is refreshed once (a 401 means the request was
        not acted on, so sending it again is safe)."""
        return self._call(fn, args, kwargs, missing_ok=False)

    def call_or_none(self, fn, *args, **kwargs):
        """`call`, but None when the server says the thing is not there (HTTP 404)."""
        return self._call(fn, args, kwargs, missing_ok=True)

    def _call(self, fn, args, kwargs, missing_ok: bool):
        for attempt in (0, 1):
            self._last.what = ""
            try:
                return fn(*args, **kwargs)
            except ApiError as e:
                if missing_ok and e.status_code == 404:
                    return None
                refresh_refused = self._what().endswith(REFRESH_PATH)
                if e.status_code == 401 and self._jwt and attempt == 0 and not refresh_refused:
                    self.sdk._client_wrapper._tokens_client._access_token = None
                    continue
                raise self._error(e, refresh_refused) from None
            except ValueError as e:  # a body that is not JSON, or JSON of another shape (pydantic)
                raise self._not_label_studio(str(e)[:200]) from None
            except httpx.HTTPError as e:
                raise LabelStudioError(f"Label Studio at {self.url}: {self._what() or 'a request'} failed: "
                                       f"{e.__class__.__name__}") from None

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A raw request on the SDK's HTTP client (its authentication, our retries): for what the SDK lacks.
        A status other than 2xx raises like an SDK call."""
        def send():
            r = self.sdk._client_wrapper.httpx_client.request(path.lstrip("/"), method=method, **kwargs)
            if not 200 <= r.status_code < 300:
                try:
                    body = r.json()
                except ValueError:
                    body = r.text
                raise ApiError(status_code=r.status_code, headers=dict(r.headers), body=body)
            return r
        return self.call(send)

    def upload(self, project: int, path, name: str) -> list[int]:
        """Upload one file into a project (Label Studio makes a task of it); the SDK has no upload call."""
        with open(path, "rb") as f:
            r = self.request("POST", f"api/projects/{project}/import", params={"return_task_ids": "true"},
                             files={"file": (name, f)})
        return [int(i) for i in self._json(r)["task_ids"]]

    def media(self, url: str, timeout: float = 30.0) -> bytes:
        """The bytes behind a task's image URL: a Label Studio path (/data/upload/..., /data/local-files/?d=...)
        or a URL on this server is fetched with the key; a URL elsewhere without it (the key never leaves for
        another host). Raises a LabelStudioError naming the URL."""
        parts, base = urlsplit(url), urlsplit(self.url)
        if parts.scheme and parts.scheme not in ("http", "https"):
            raise LabelStudioError(f"image URL {redact(url)}: {parts.scheme}:// is not fetched by annotassist; "
                                   "serve the images through Label Studio (local files or uploads) or over http(s)")
        if not parts.scheme and not url.startswith("/"):
            raise LabelStudioError(f"image URL {url!r} is neither a Label Studio path nor an http(s) URL")
        ours = not parts.scheme or (parts.scheme, parts.netloc) == (base.scheme, base.netloc)
        if ours:
            path = urlunsplit(("", "", parts.path, parts.query, ""))
            prefix = base.path.rstrip("/")
            if parts.scheme and prefix and path.startswith(prefix):
                path = path[len(prefix):]

            def send():
                return self.sdk._client_wrapper.httpx_client.request(
                    path.lstrip("/"), method="GET", request_options={"timeout_in_seconds": timeout})
            r = self.call(send)
        else:
            self._last.what = ""
            try:
                r = self._http.get(url, timeout=timeout)
            except httpx.HTTPError as e:
                raise LabelStudioError(f"image {redact(url)} cannot be fetched: {e.__class__.__name__}") from None
        if r.status_code != 200:
            where = f"Label Studio at {self.url}" if ours else "its server"
            hint = " (a local file outside every storage folder, or a deleted upload?)" if r.status_code == 404 else ""
            raise LabelStudioError(f"image {redact(url)} cannot be fetched: {where} answered HTTP "
                                   f"{r.status_code}{hint}")
        return r.content

    # -- errors --------------------------------------------------------------------------------------------

    def _json(self, r: httpx.Response):
        try:
            return r.json()
        except ValueError:
            raise self._not_label_studio(r.text[:200]) from None

    def _error(self, e: ApiError, refresh_refused: bool = False) -> LabelStudioError:
        status, what = e.status_code, self._what() or "a request"
        if status is not None and 200 <= status < 300:  # the SDK could not read the answer as JSON
            return self._not_label_studio(str(e.body)[:200])
        if status is not None and 300 <= status < 400:
            where = (e.headers or {}).get("location", "elsewhere")
            return LabelStudioError(
                f"{self.url} answered {what} with a redirect to {redact(where)}: this is not Label Studio's API "
                "(a login page or a proxy in front of it?); pass --url with Label Studio's own address")
        if status in (401, 403):
            return self._refused(e, token_itself=refresh_refused)
        if status is not None and isinstance(e.body, str) and _looks_like_html(e.body):
            return self._not_label_studio(e.body[:200], status)
        return LabelStudioError(f"Label Studio at {self.url}: {what} failed with HTTP {status}: {_detail(e.body)}")

    def _refused(self, e: ApiError, token_itself: bool) -> LabelStudioError:
        if self._jwt and token_itself:
            return LabelStudioError(
                f"Label Studio at {self.url} refused the personal access token in {ENV_KEY} ({_detail(e.body)}): it "
                "is wrong, revoked or expired; create a new one under Account & Settings > Personal Access Token")
        kind = "personal access token" if self._jwt else "legacy token"
        return LabelStudioError(
            f"Label Studio at {self.url} refused the API key in {ENV_KEY} (HTTP {e.status_code}: {_detail(e.body)}). "
            f"Check it is this server's {kind} (Account & Settings); legacy tokens must also be enabled for the "
            "organization")

    def _not_label_studio(self, sample: str, status: int = 200) -> LabelStudioError:
        kind = "a web page (HTML)" if _looks_like_html(sample) else "something that is not JSON"
        return LabelStudioError(
            f"{self.url} answered {self._what() or 'a request'} with {kind} (HTTP {status}), not Label Studio's "
            "API: is --url the address of the Label Studio server itself (not a login page, a proxy or another "
            "application)?")


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith("<!doctype html") or head.startswith("<html") or "<head" in head or "<body" in head


def _detail(body) -> str:
    if isinstance(body, dict):
        parts = [str(body.get(k)) for k in ("detail", "validation_errors") if body.get(k)]
        return ": ".join(parts or [str(body)])[:400]
    return str(body)[:200]
