"""A task's time limits as the worker applies them: the message's own (`apply_async(soft_time_limit=…)`),
else the task's, else the worker's setting."""


def soft_time_limit(task) -> float | None:
    """The soft time limit of the run `task.request` describes, in seconds; None: none."""
    return (task.request.timelimit or (None, None))[1] or task.soft_time_limit or task.app.conf.task_soft_time_limit
