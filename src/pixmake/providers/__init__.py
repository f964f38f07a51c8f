"""Provider adapters: one small protocol (submit, poll, download), one module per API."""

from pixmake.providers.base import GenerationRequest, Provider, TaskState, TaskStatus

__all__ = ["GenerationRequest", "Provider", "TaskState", "TaskStatus"]
