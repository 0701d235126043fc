"""Task registry, sandbox tasks and loaders for real benchmark formats."""

from selfcorrect.tasks.base import SPLITS, Task, get_kit, get_task, kit_names, task_class, task_names

__all__ = ["SPLITS", "Task", "get_kit", "get_task", "kit_names", "task_class", "task_names"]
