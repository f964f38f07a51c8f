"""The provider protocol and the values that cross it.

A provider turns a :class:`GenerationRequest` into a task, reports its :class:`TaskStatus`, and
downloads result bytes. It raises only :class:`~pixmake.errors.ProviderError` subclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Protocol

__all__ = ["GenerationRequest", "Provider", "TaskState", "TaskStatus"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One paid submit: the model inputs plus the idempotency id."""

    model: str
    prompt: str
    size: str
    n: int
    client_business_id: str
    image_urls: tuple[str, ...] = ()
    mask_url: str | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class TaskState(Enum):
    """Where a task is; unknown non-terminal provider statuses map to RUNNING."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Whether the task will not change again."""
        return self is not TaskState.RUNNING


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """A task as the provider last described it."""

    task_id: str
    state: TaskState
    status: str  # the provider's own word ("queued", "in_progress", ...)
    progress: int = 0
    urls: tuple[str, ...] = ()
    error_code: str | None = None
    error_message: str | None = None
    expires_at: float | None = None  # Unix time after which the result URLs stop working (§3.1)
    client_business_id: str | None = None  # the id it was submitted with, when the provider echoes it


class Provider(Protocol):
    """What the executor needs from an image API."""

    async def upload(self, data: bytes, *, filename: str) -> str:
        """Upload a local reference or mask; returns a URL the API can fetch."""
        ...

    async def submit(self, request: GenerationRequest) -> TaskStatus:
        """Create a task (this is where money is spent)."""
        ...

    async def poll(self, task_id: str) -> TaskStatus:
        """Current status of a task."""
        ...

    async def find(self, client_business_id: str) -> TaskStatus | None:
        """The task created with this idempotency id, or None when the provider has none."""
        ...

    async def download(self, url: str) -> bytes:
        """The bytes at a result URL, complete or an error."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
