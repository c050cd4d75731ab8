"""Where units of work run: in this process (``"local"``, the default) or on a Ray cluster (``"ray"``).

A unit of work is a plain function call ``fn(*args)`` whose result the driver consumes: a group of
same-shaped models (replicate), a shard of a pool (acquire), or one (strategy, seed) run (loop). The
driver alone writes results (``results.sqlite``, ``loop.sqlite``, the batch file), as they arrive,
so a resumed run and the local backend see exactly the same store.

Ray (``pip install "jacal[ray]"``): ``RayBackend(address=None)`` starts a local instance
(``ray.init(num_cpus=...)``); ``address="auto"`` or ``"ray://host:port"`` joins an existing cluster.
Tasks declare their resources (``num_cpus``, and ``num_gpus`` — fractional when several small groups
should share a GPU) and are retried by Ray when their worker dies (``max_retries``); a retried task
recomputes the same deterministic result, and the driver writes each unit once.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from jacal._internal.validation import JacalError, check_choice, first_line

__all__ = ["Backend", "LocalBackend", "RayBackend", "get_backend", "BACKENDS"]

BACKENDS = ("local", "ray")


class Backend:
    """Runs ``fn(*args)`` for each args tuple; yields ``(index, result)`` as results arrive."""

    name = "base"

    def map_unordered(self, fn: Callable, jobs: Sequence[Tuple], *, num_gpus: float = 0.0) -> Iterator[Tuple[int, Any]]:
        raise NotImplementedError

    def put(self, obj: Any) -> Any:
        """Share a large read-only object with every job (Ray: the object store)."""
        return obj

    def close(self) -> None:
        pass


class LocalBackend(Backend):
    """In-process, in order."""

    name = "local"

    def map_unordered(self, fn, jobs, *, num_gpus=0.0):
        for i, args in enumerate(jobs):
            yield i, fn(*args)


class RayBackend(Backend):
    """Ray tasks with declared resources and retries.

    Args:
        address: ``None`` starts a local Ray instance; ``"auto"`` or ``"ray://host:port"`` connects to
            a running cluster.
        num_cpus: CPUs of a local instance (default: all).
        max_retries: times Ray re-runs a task whose worker died.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, *, num_cpus: Optional[int] = None, max_retries: int = 3) -> None:
        try:
            import ray
        except ImportError as err:
            raise JacalError('the Ray backend needs Ray: pip install "jacal[ray]"') from err
        self._ray = ray
        self.max_retries = max_retries
        self._owns = False
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                if address is None:
                    ray.init(num_cpus=num_cpus, **kwargs)
                    self._owns = True
                else:
                    ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise JacalError(f"cannot start or reach Ray at {address or 'a local instance'}: "
                                 f"{first_line(err, None)}") from err

    def put(self, obj):
        return self._ray.put(obj)

    def map_unordered(self, fn, jobs, *, num_gpus=0.0):
        ray = self._ray
        remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=self.max_retries, retry_exceptions=False)(fn)
        pending = {remote.remote(*args): i for i, args in enumerate(jobs)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            i = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # the job itself raised: surface its error
                cause = err.cause if getattr(err, "cause", None) is not None else err
                for r in pending:
                    ray.cancel(r)
                raise cause
            yield i, result

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def get_backend(name: str = "local", *, address: Optional[str] = None, num_cpus: Optional[int] = None) -> Backend:
    """``"local"`` or ``"ray"`` (see :class:`RayBackend`)."""
    check_choice("backend", name, BACKENDS)
    if name == "local":
        if address is not None:
            raise ValueError("`address` only applies to the Ray backend (pass backend='ray').")
        return LocalBackend()
    return RayBackend(address, num_cpus=num_cpus)

