"""Task registry, sandbox tasks and loaders for real benchmark formats."""

from selfcorrect.tasks.base import SPLITS, Task, get_task, task_class, task_names

__all__ = ["SPLITS", "Task", "get_task", "task_class", "task_names"]
