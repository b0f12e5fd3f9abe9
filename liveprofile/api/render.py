"""Template rendering off the event loop, with CPU-time and output-size limits.

Contract: :meth:`TemplateRenderer.render` renders one template (by name, with a context of JSON
data) in a separate worker process and returns its HTML, so a template that loops for minutes
or computes ``x ** 9999999`` never holds the API's event loop (``/healthz`` and every other
request keep being answered). A render is refused with :class:`RenderError`:

* ``template_timeout`` — it did not finish within ``timeout_s`` seconds: its worker process is
  killed (the only way to stop a Python computation in C) and replaced, so the bound holds for
  any template; a render that shared the killed worker pool is retried once on the new one
  (whose workers' start, up to :data:`STARTUP_S`, is not counted in a render's time);
* ``template_output_too_large`` — its output passed ``max_bytes`` (checked as it is generated,
  so a template cannot fill memory with output either);
* ``template_error`` — the template failed (syntax, an undefined call, the sandbox's
  ``SecurityError``; :func:`sandbox` also refuses ``**`` with an exponent over 1,000 and ``*``
  that would build a string or list of more than ``max_bytes``).

Workers are started with ``spawn`` (never a fork of the serving process) and build their own
:func:`sandbox` over the same template folder. Each worker's address space is capped at
:data:`WORKER_MEMORY` bytes (``RLIMIT_AS``; a render that needs more fails as a template error).

May import: jinja2 (nothing of liveprofile).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import operator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["TemplateRenderer", "RenderError", "sandbox", "WORKER_MEMORY", "MAX_EXPONENT"]

#: the largest exponent ``**`` takes in a template
MAX_EXPONENT = 1000
#: seconds a new pool's workers may take to start
STARTUP_S = 60.0
#: address-space cap of a render worker (bytes)
WORKER_MEMORY = 1 << 30


class RenderError(Exception):
    """A refused render: ``code`` (see the module doc) and a readable message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Sandbox(SandboxedEnvironment):
    """The sandbox with arithmetic that cannot allocate without bound."""

    intercepted_binops = frozenset({"**", "*"})
    max_bytes = 1 << 20

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise jinja2.sandbox.SecurityError(f"exponent {right!r} is over {MAX_EXPONENT}")
            return operator.pow(left, right)
        if operator_name == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > self.max_bytes:
                    raise jinja2.sandbox.SecurityError("a repetition over the output limit")
            return operator.mul(left, right)
        return super().call_binop(context, operator_name, left, right)


def sandbox(templates_dir: str | None, builtins: dict[str, str], max_bytes: int) -> SandboxedEnvironment:
    """The sandboxed, autoescaping environment: ``templates_dir`` first, then ``builtins``.

    >>> env = sandbox(None, {"t.html": "{{ 2 ** 10 }} {{ x }}"}, 100)
    >>> env.get_template("t.html").render(x="<b>")
    '1024 &lt;b&gt;'
    >>> env.from_string("{{ 10 ** 9999999 }}").render()
    Traceback (most recent call last):
    ...
    jinja2.exceptions.SecurityError: exponent 9999999 is over 1000
    """
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir:
        loaders.append(jinja2.FileSystemLoader(templates_dir))
    loaders.append(jinja2.DictLoader(builtins))
    env = _Sandbox(loader=jinja2.ChoiceLoader(loaders), autoescape=True, auto_reload=True)
    env.max_bytes = max_bytes
    return env


_ENV: SandboxedEnvironment | None = None
_MAX = 0


def _init_worker(templates_dir: str | None, builtins: dict[str, str], max_bytes: int) -> None:
    global _ENV, _MAX
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on this platform
        pass
    _ENV = sandbox(templates_dir, builtins, max_bytes)
    _MAX = max_bytes


def _ping() -> bool:
    return True


def _render_in_worker(name: str, ctx: dict[str, Any]) -> tuple[str, str]:
    """("ok", html) or (code, message), in a worker process."""
    assert _ENV is not None
    try:
        parts: list[str] = []
        size = 0
        for chunk in _ENV.get_template(name).generate(ctx):
            size += len(chunk)
            if size > _MAX:
                return "template_output_too_large", f"the output passed {_MAX} characters"
            parts.append(chunk)
        return "ok", "".join(parts)
    except (jinja2.TemplateError, MemoryError, RecursionError, ArithmeticError, TypeError, ValueError) as exc:
        # the type only: the sandbox's messages name Python internals a template reached for
        return "template_error", f"failed: {type(exc).__name__}"


class TemplateRenderer:
    """Renders in a pool of ``workers`` spawned processes (see the module doc)."""

    def __init__(self, templates_dir: str | None, builtins: dict[str, str], *, timeout_s: float = 2.0,
                 max_bytes: int = 1 << 20, workers: int = 2) -> None:  # fmt: skip
        self.templates_dir = templates_dir
        self.builtins = dict(builtins)
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._restart: asyncio.Task[None] | None = None

    async def _get_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        """The pool, its workers started (a worker's start is not counted in a render's time)."""
        async with self._lock:
            if self._pool is None:
                pool = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                    initargs=(self.templates_dir, self.builtins, self.max_bytes),
                )  # fmt: skip
                loop = asyncio.get_running_loop()
                try:
                    await asyncio.wait_for(asyncio.gather(*(loop.run_in_executor(pool, _ping) for _ in range(self.workers))), STARTUP_S)
                except (TimeoutError, BrokenProcessPool):
                    self._kill_pool(pool)
                    raise RenderError("template_error", "the render workers did not start") from None
                self._pool = pool
            return self._pool

    def _kill_pool(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        """Whether the workers are started."""
        return self._pool is not None

    async def start(self) -> None:
        """Start the workers now (the API's startup calls it in the background), not at the first render."""
        with contextlib.suppress(RenderError):  # the first render tries again and answers the error
            await self._get_pool()

    async def render(self, name: str, ctx: dict[str, Any]) -> str:
        """The HTML of template ``name`` with ``ctx``; :class:`RenderError` when refused."""
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            pool = await self._get_pool()
            try:
                fut = loop.run_in_executor(pool, _render_in_worker, name, ctx)
                code, out = await asyncio.wait_for(fut, self.timeout_s)
            except TimeoutError:
                self._kill_pool(pool)
                self._restart = loop.create_task(self.start())  # new workers, before the next render asks
                raise RenderError("template_timeout", f"the template did not finish within {self.timeout_s:g} s") from None
            except BrokenProcessPool:
                self._kill_pool(pool)
                if attempt:
                    raise RenderError("template_error", "the render worker died") from None
                continue
            if code != "ok":
                raise RenderError(code, out)
            return out
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._kill_pool(self._pool)
